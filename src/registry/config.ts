import type { Config } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { RegistryClientOptions } from "./client.ts";
import { loadHostsDir } from "./_hosts_dir.ts";

/**
 * The registry client's options from the daemon configuration (`[resolver]`, `[blob]`), shared
 * by the daemon and the CLI. Reads `[resolver] config_path` (containerd's certs.d) and the
 * certificates it names, so a broken host directory fails here, at start, with its file named.
 */
export async function registryOptionsFromConfig(
  config: Config,
  log: Logger,
): Promise<RegistryClientOptions> {
  const host: NonNullable<NonNullable<RegistryClientOptions["hosts"]>["host"]> = {};
  for (const [name, entry] of Object.entries(config.resolver.host)) {
    host[name] = {
      mirrors: entry.mirrors.map((m) => ({
        host: m.host,
        insecure: m.insecure,
        requestTimeoutSec: m.request_timeout_sec,
        header: m.header,
      })),
    };
  }
  const hostsDir = config.resolver.config_path
    ? await loadHostsDir(config.resolver.config_path)
    : undefined;
  return {
    hosts: {
      requestTimeoutSec: config.resolver.request_timeout_sec,
      host,
      ...(hostsDir ? { hostsDir } : {}),
    },
    blob: {
      validIntervalSec: config.blob.valid_interval,
      forceSingleRangeMode: config.blob.force_single_range_mode,
      maxRetries: config.blob.max_retries,
      minWaitMsec: config.blob.min_wait_msec,
      maxWaitMsec: config.blob.max_wait_msec,
      fetchingTimeoutSec: config.blob.fetching_timeout_sec,
    },
    log,
  };
}
