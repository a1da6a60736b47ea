import * as path from "node:path";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { type FdStore, openHolder } from "../fdstore/mod.ts";
import { log, parseLogLevel, setLogLevel } from "../log/mod.ts";
import { LayerFileSystem } from "../fs/mod.ts";
import { HostsDirError, RegistryClient, registryOptionsFromConfig } from "../registry/mod.ts";
import { hasLibc, selfCommand } from "../runtime/mod.ts";
import {
  type AdminServer,
  type AdminSources,
  metricsApp,
  notifySystemd,
  serveApp,
  startAdmin,
  startDaemon,
} from "../service/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { str } from "./_flags.ts";
import { REVISION, VERSION } from "./_version.ts";

/** Defaults shared with the Go `containerd-stargz-grpc`. */
export const DEFAULT_ADDRESS = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock";
export const DEFAULT_CONFIG = "/etc/containerd-stargz-grpc/config.toml";
export const DEFAULT_ROOT = "/var/lib/containerd-stargz-grpc";

/** Where the admin API listens: `[admin] address`, else `admin.sock` beside the socket. */
export function adminAddress(configured: string, address: string): string | undefined {
  if (configured === "off") return undefined;
  return configured || path.join(path.dirname(address), "admin.sock");
}

/** Resolves when the process receives SIGINT or SIGTERM; names the signal. */
function nextStopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => () => resolve(sig);
    process.once("SIGINT", on("SIGINT"));
    process.once("SIGTERM", on("SIGTERM"));
  });
}

/**
 * The fd holder beside the root, started when none runs: it keeps the layers' FUSE connections
 * across restarts. None where this runtime cannot move descriptors (no FFI): then a restart
 * unmounts the layers, as before.
 */
async function openFdStore(root: string): Promise<FdStore | undefined> {
  if (!hasLibc()) {
    log.warn("no FFI on this runtime: layer mounts will not survive a restart");
    return undefined;
  }
  const socket = path.join(root, "fd-holder.sock");
  try {
    return await openHolder({
      socket,
      command: selfCommand(["fd-holder", "--socket", socket]),
      log,
    });
  } catch (err) {
    log.error("no fd holder: layer mounts will not survive a restart", { error: err });
    return undefined;
  }
}

/** `stargz serve`: the snapshotter daemon (what `containerd-stargz-grpc` runs). */
export const serveCommand: Command = {
  name: "serve",
  summary: "run the snapshotter daemon (containerd proxy plugin)",
  usage: "[--address SOCKET] [--config FILE] [--root DIR] [--log-level LEVEL]",
  flags: [
    {
      name: "address",
      kind: "string",
      default: DEFAULT_ADDRESS,
      help: "address for the snapshotter's GRPC server",
      valueName: "SOCKET",
    },
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "path to the configuration file",
      valueName: "FILE",
    },
    {
      name: "root",
      kind: "string",
      default: DEFAULT_ROOT,
      help: "path to the root directory for this snapshotter",
      valueName: "DIR",
    },
    {
      name: "log-level",
      kind: "string",
      default: "info",
      help: "set the logging level [trace, debug, info, warn, error, fatal, panic]",
      valueName: "LEVEL",
    },
  ],
  async run(flags) {
    const levelName = str(flags, "log-level") ?? "info";
    const level = parseLogLevel(levelName);
    if (!level) throw new CommandError(`invalid --log-level "${levelName}"`, 2);
    setLogLevel(level);
    const configPath = str(flags, "config") ?? DEFAULT_CONFIG;
    let loaded;
    try {
      loaded = await loadConfig(configPath, { explicit: flags.given.has("config") });
    } catch (err) {
      if (err instanceof ConfigError) throw new CommandError(err.message, 1);
      throw err;
    }
    for (const w of loaded.warnings) log.warn(w, { config: configPath });
    const stopped = nextStopSignal();
    const root = str(flags, "root") ?? DEFAULT_ROOT;
    const address = str(flags, "address") ?? DEFAULT_ADDRESS;
    const config = loaded.config;
    let registryOptions;
    try {
      registryOptions = await registryOptionsFromConfig(config, log);
    } catch (err) {
      if (err instanceof HostsDirError) throw new CommandError(err.message, 1);
      throw err;
    }
    const daemon = await startDaemon({
      address,
      root,
      config,
      log,
      fileSystem: async (root, keychain) =>
        LayerFileSystem.create({
          root,
          config,
          registry: new RegistryClient({ ...registryOptions, keychain }),
          log,
          fdStore: await openFdStore(root),
        }),
    });
    // After the start, so that a start failure stays one line; before anything else is served.
    log.info("running", {
      version: `${VERSION} ${REVISION}`,
      config: loaded.file ?? `${configPath} (absent: defaults)`,
      root,
      address,
    });
    const layers = daemon.fileSystem as LayerFileSystem;
    const startedAt = new Date().toISOString();
    const sources: AdminSources = {
      daemon: () => ({
        version: `${VERSION} ${REVISION}`,
        config: configPath,
        configFound: loaded.file !== undefined,
        root,
        address,
        pid: process.pid,
        startedAt,
      }),
      layers: () => layers.mounted(),
      fallbacks: () => daemon.snapshotter.fallbacks(),
      cache: () => ({ ...layers.cache.stats() }),
      snapshots: () => daemon.snapshotter.list(),
      restore: () => daemon.snapshotter.restoreStatus(),
      profiles: () => layers.profiles?.list() ?? [],
    };
    const servers: AdminServer[] = [];
    try {
      const at = adminAddress(config.admin.address, address);
      if (at) {
        try {
          servers.push(await startAdmin(at, sources, log, { metrics: !config.no_prometheus }));
        } catch (err) {
          // Only an address someone asked for is worth refusing to start over.
          if (config.admin.address) throw err;
          log.warn("admin API not started", { address: at, error: (err as Error).message });
        }
      }
      if (config.metrics_address && !config.no_prometheus) {
        servers.push(
          await serveApp(config.metrics_address, metricsApp(sources), log, "metrics API"),
        );
      }
    } catch (err) {
      await Promise.all(servers.map((s) => s.close()));
      await daemon.stop();
      throw new CommandError(`admin or metrics address: ${(err as Error).message}`, 1);
    }
    notifySystemd("READY=1", log);
    const outcome = await Promise.race([stopped, daemon.fatal]).catch((err: Error) => err);
    await Promise.all(servers.map((s) => s.close()));
    if (outcome instanceof Error) {
      await daemon.stop();
      throw new CommandError(outcome.message, 1);
    }
    log.info("shutting down", { signal: outcome });
    notifySystemd("STOPPING=1", log);
    await daemon.stop();
    return 0;
  },
};
