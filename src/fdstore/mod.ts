/**
 * Somewhere outside the daemon to keep file descriptors across its restarts: every FUSE
 * connection lives as long as one process holds its /dev/fuse descriptor, so a container's
 * mounts survive a restart, an upgrade or a crash of the daemon when a copy sits here.
 *
 * The one store is {@link openHolder}: a small detached process of our own binary
 * (`stargz fd-holder`), spoken to over a unix socket. Descriptors move with `pidfd_getfd`
 * (see `takeFd` in src/runtime), never through the socket: the holder copies the daemon's
 * descriptor by number, and a new daemon copies the holder's back the same way.
 */
export { FdHolderError, type FdStore, openHolder, type OpenHolderOptions } from "./_client.ts";
export { runHolder } from "./_holder.ts";
