/**
 * The daemon: prepares the root and socket, opens the snapshotter under the root, serves
 * containerd's Snapshots gRPC service on the unix socket, and shuts down cleanly (remote layers
 * unmounted, socket removed) when asked.
 */
import * as grpc from "@grpc/grpc-js";
import * as fs from "node:fs/promises";
import type { Config } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import { type FileSystem, Snapshotter } from "../snapshot/mod.ts";
import { prepareSocketPath, removeCreated } from "./_socket.ts";
import { prepareRoot } from "./_root.ts";
import { snapshotsService, snapshotsServiceDefinition } from "./snapshots.ts";

export { SocketPathError } from "./_socket.ts";
export { notifySystemd } from "./_systemd.ts";
export { RootDirError } from "./_root.ts";
export {
  SNAPSHOTS_SERVICE_NAME,
  snapshotsPackageDefinition,
  snapshotsService,
  snapshotsServiceDefinition,
  toGrpcError,
} from "./snapshots.ts";

/** What `stargz serve` needs to start. */
export interface DaemonOptions {
  address: string;
  root: string;
  config: Config;
  log: Logger;
  /**
   * Serves remote layers (or makes the filesystem once the root is ready); without one every
   * Prepare makes an ordinary snapshot.
   */
  fileSystem?: FileSystem | ((root: string) => Promise<FileSystem & { close?(): Promise<void> }>);
}

/** A running daemon. */
export interface Daemon {
  /** The snapshotter behind the socket. */
  readonly snapshotter: Snapshotter;
  /** The remote layer filesystem, when there is one. */
  readonly fileSystem: FileSystem | undefined;
  /**
   * Rejects when the daemon can no longer run (remote snapshots that could not be restored
   * while `allow_invalid_mounts_on_restart` is off); never resolves otherwise.
   */
  readonly fatal: Promise<never>;
  /** Stops serving, unmounts remote layers, closes the store and removes the socket. */
  stop(): Promise<void>;
}

function bind(server: grpc.Server, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix://${address}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
}

function shutdown(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Starts the daemon; on failure nothing it created is left behind. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const rootCreated = await prepareRoot(opts.root);
  let socketDirs: string[] = [];
  const server = new grpc.Server();
  let snapshotter: Snapshotter | undefined;
  let fileSystem: (FileSystem & { close?(): Promise<void> }) | undefined;
  try {
    fileSystem = typeof opts.fileSystem === "function"
      ? await opts.fileSystem(opts.root)
      : opts.fileSystem;
    snapshotter = await Snapshotter.open({
      root: opts.root,
      log: opts.log,
      fileSystem,
      allowInvalidMountsOnRestart: opts.config.snapshotter?.allow_invalid_mounts_on_restart ??
        false,
    });
    server.addService(snapshotsServiceDefinition(), snapshotsService(snapshotter, opts.log));
    socketDirs = await prepareSocketPath(opts.address);
    await bind(server, opts.address);
  } catch (err) {
    server.forceShutdown();
    await snapshotter?.close();
    await fileSystem?.close?.();
    await removeCreated(socketDirs);
    if (rootCreated) await fs.rm(opts.root, { recursive: true, force: true });
    throw err;
  }
  const sn = snapshotter;
  opts.log.info("serving", { address: opts.address, root: opts.root });
  const fatal = sn.restored.then(
    () => new Promise<never>(() => {}),
    (err: Error) => {
      opts.log.log("fatal", "cannot serve remote snapshots", { error: err });
      throw err;
    },
  );
  // Observed by whoever awaits `fatal`; never an unhandled rejection on its own.
  fatal.catch(() => {});
  let stopping: Promise<void> | undefined;
  return {
    snapshotter: sn,
    fileSystem,
    fatal,
    stop(): Promise<void> {
      stopping ??= (async () => {
        await shutdown(server);
        await sn.close();
        await fileSystem?.close?.();
        await fs.rm(opts.address, { force: true });
        opts.log.info("stopped", { address: opts.address });
      })();
      return stopping;
    },
  };
}
