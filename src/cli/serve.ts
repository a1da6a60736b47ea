import * as path from "node:path";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { type FdStore, openHolder } from "../fdstore/mod.ts";
import { log, parseLogLevel, setLogLevel } from "../log/mod.ts";
import { LayerFileSystem } from "../fs/mod.ts";
import { RegistryClient } from "../registry/mod.ts";
import { startAdmin } from "../service/admin.ts";
import type { AdminServer } from "../service/admin.ts";
import { notifySystemd, startDaemon } from "../service/mod.ts";
import { hasLibc, selfCommand } from "../runtime/mod.ts";
import { registryOptionsFromConfig } from "../service/registry_options.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { str } from "./_flags.ts";

/** Defaults shared with the Go `containerd-stargz-grpc`. */
export const DEFAULT_ADDRESS = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock";
export const DEFAULT_CONFIG = "/etc/containerd-stargz-grpc/config.toml";
export const DEFAULT_ROOT = "/var/lib/containerd-stargz-grpc";

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
    const config = loaded.config;
    const daemon = await startDaemon({
      address: str(flags, "address") ?? DEFAULT_ADDRESS,
      root,
      config,
      log,
      fileSystem: async (root) =>
        LayerFileSystem.create({
          root,
          config,
          registry: new RegistryClient(registryOptionsFromConfig(config, log)),
          log,
          fdStore: await openFdStore(root),
        }),
    });
    notifySystemd("READY=1", log);
    let admin: AdminServer | undefined;
    if (config.admin.address) {
      const layers = daemon.fileSystem as LayerFileSystem;
      admin = await startAdmin(
        config.admin.address,
        {
          layers: () => layers.mounted(),
          cache: () => ({ ...layers.cache.stats() }),
          snapshots: () => daemon.snapshotter.list(),
          restore: () => daemon.snapshotter.restoreStatus(),
        },
        log,
        { metrics: !config.no_prometheus },
      );
    }
    const outcome = await Promise.race([stopped, daemon.fatal]).catch((err: Error) => err);
    await admin?.close();
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
