/**
 * `sd_notify` without libsystemd: under a `Type=notify` unit systemd learns when the daemon
 * serves (`READY=1`) and when it is stopping (`STOPPING=1`), so `systemctl restart` waits for
 * the socket and dependants start after it.
 */
import type { Logger } from "../log/mod.ts";
import { hasLibc, sendDatagram } from "../runtime/mod.ts";

/** Sends `state` to `$NOTIFY_SOCKET` when systemd set one; false when there is none. */
export function notifySystemd(state: string, log: Logger): boolean {
  const socket = process.env.NOTIFY_SOCKET;
  if (!socket) return false;
  if (!hasLibc()) {
    log.warn("cannot notify systemd: no FFI on this runtime", { state });
    return false;
  }
  try {
    sendDatagram(socket, state);
    return true;
  } catch (err) {
    log.warn("cannot notify systemd", { state, error: err });
    return false;
  }
}
