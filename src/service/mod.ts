/**
 * The daemon: prepares the root and socket, opens the keychains and the snapshotter under the
 * root, serves containerd's Snapshots gRPC service on the unix socket (and, with the CRI
 * keychain, the CRI image service proxy there or on its own socket), and shuts down cleanly
 * (remote layers unmounted, sockets removed) when asked.
 */
import * as grpc from "@grpc/grpc-js";
import * as fs from "node:fs/promises";
import type { Config } from "../config/mod.ts";
import { CRI_IMAGE_REF_LABEL, STARGZ_REFERENCE_LABEL } from "../labels/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Keychain } from "../registry/mod.ts";
import { type FileSystem, Snapshotter } from "../snapshot/mod.ts";
import { prepareSocketPath, removeCreated } from "./_socket.ts";
import { prepareRoot } from "./_root.ts";
import { type CriImageProxy, criImageProxy } from "./cri.ts";
import { type DaemonKeychains, openKeychains } from "./keychains.ts";
import { snapshotsService, snapshotsServiceDefinition } from "./snapshots.ts";

export { type AdminServer, type AdminSources, metricsApp, serveApp, startAdmin } from "./admin.ts";
export { SocketPathError } from "./_socket.ts";
export { notifySystemd } from "./_systemd.ts";
export { RootDirError } from "./_root.ts";
export { type Status, type StatusLayer, StatusSchema } from "./_status.ts";
export { formatBytes } from "./_status_page.ts";
export { CRI_IMAGE_SERVICE_NAME, criImageServiceDefinition } from "./cri.ts";
export { CRI_CREDENTIALS_FILE, KeychainConfigError } from "./keychains.ts";
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
   * Serves remote layers (or makes the filesystem once the root is ready, fetching with the
   * daemon's keychains); without one every Prepare makes an ordinary snapshot.
   */
  fileSystem?:
    | FileSystem
    | ((root: string, keychain: Keychain) => Promise<FileSystem & { close?(): Promise<void> }>);
}

/** containerd's default socket: the CRI image service when `image_service_path` is "". */
export const DEFAULT_IMAGE_SERVICE_PATH = "/run/containerd/containerd.sock";

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

/** The image references the snapshots' source labels name (whose credentials are needed). */
async function imagesInUse(sn: Snapshotter): Promise<string[]> {
  const refs = new Set<string>();
  for (const info of await sn.list([])) {
    const ref = info.labels[CRI_IMAGE_REF_LABEL] ?? info.labels[STARGZ_REFERENCE_LABEL];
    if (ref) refs.add(ref);
  }
  return [...refs];
}

/** Starts the daemon; on failure nothing it created is left behind. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const rootCreated = await prepareRoot(opts.root);
  let socketDirs: string[] = [];
  let criSocketDirs: string[] = [];
  const server = new grpc.Server();
  let criServer: grpc.Server | undefined;
  let criProxy: CriImageProxy | undefined;
  let keychains: DaemonKeychains | undefined;
  let snapshotter: Snapshotter | undefined;
  let fileSystem: (FileSystem & { close?(): Promise<void> }) | undefined;
  const criConfig = opts.config.cri_keychain;
  const criListen = criConfig.listen_path || opts.address;
  /** The CRI keychain's sweep in progress (stop waits for it before closing the store). */
  let sweeping: Promise<void> | undefined;
  try {
    keychains = await openKeychains(opts.config, opts.root, opts.log);
    fileSystem = typeof opts.fileSystem === "function"
      ? await opts.fileSystem(opts.root, keychains.keychain)
      : opts.fileSystem;
    snapshotter = await Snapshotter.open({
      root: opts.root,
      log: opts.log,
      fileSystem,
      allowInvalidMountsOnRestart: opts.config.snapshotter?.allow_invalid_mounts_on_restart ??
        false,
    });
    const sn = snapshotter;
    const cri = keychains.cri;
    // Credentials are kept while a snapshot of their image remains: looked at after every
    // removal and pull, and now (snapshots removed while the daemon was down). containerd's
    // garbage collection removes many snapshots in a row: one sweep runs at a time, and one
    // more after it when anything was removed meanwhile.
    let again = false;
    const sweepOnce = async (keychain: NonNullable<typeof cri>): Promise<void> => {
      do {
        again = false;
        try {
          await keychain.sweep(await imagesInUse(sn));
        } catch (err) {
          opts.log.warn("cri keychain: cannot drop unused credentials", {
            error: (err as Error).message,
          });
        }
      } while (again);
      sweeping = undefined;
    };
    const sweep = cri
      ? () => {
        if (sweeping) again = true;
        else sweeping = sweepOnce(cri);
      }
      : undefined;
    server.addService(
      snapshotsServiceDefinition(),
      snapshotsService(snapshotter, opts.log, { removed: sweep }),
    );
    if (cri) {
      criProxy = criImageProxy({
        backend: criConfig.image_service_path || DEFAULT_IMAGE_SERVICE_PATH,
        keychain: cri,
        log: opts.log,
        pulled: sweep,
      });
      await cri.sweep(await imagesInUse(sn));
      if (criListen === opts.address) {
        server.addService(criProxy.definition, criProxy.implementation);
      } else {
        criServer = new grpc.Server();
        criServer.addService(criProxy.definition, criProxy.implementation);
      }
    }
    socketDirs = await prepareSocketPath(opts.address);
    await bind(server, opts.address);
    if (criServer) {
      criSocketDirs = await prepareSocketPath(criListen);
      await bind(criServer, criListen);
    }
  } catch (err) {
    server.forceShutdown();
    criServer?.forceShutdown();
    criProxy?.close();
    await snapshotter?.close();
    await fileSystem?.close?.();
    await keychains?.close();
    await removeCreated(criSocketDirs);
    await removeCreated(socketDirs);
    if (rootCreated) await fs.rm(opts.root, { recursive: true, force: true });
    throw err;
  }
  const daemonKeychains = keychains;
  const sn = snapshotter;
  opts.log.info("serving", {
    address: opts.address,
    root: opts.root,
    keychains: daemonKeychains.names.join(", "),
    ...(criProxy ? { cri_image_service: criListen } : {}),
  });
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
        if (criServer) {
          await shutdown(criServer);
          await fs.rm(criListen, { force: true });
        }
        criProxy?.close();
        await sweeping;
        await sn.close();
        await fileSystem?.close?.();
        await daemonKeychains.close();
        await fs.rm(opts.address, { force: true });
        opts.log.info("stopped", { address: opts.address });
      })();
      return stopping;
    },
  };
}
