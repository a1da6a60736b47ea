/**
 * The daemon configuration as the layer filesystem uses it, in one place for the daemon
 * (`LayerFileSystem`) and `stargz mount`.
 */
import type { Config } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import { BackgroundScheduler } from "./_background.ts";
import type { ChunkCacheOptions } from "./_chunk_cache.ts";
import type { LayerMountOptions } from "./_layer_fuse.ts";
import type { Layer } from "./layer.ts";

/** Silence period of background work after an on-demand read or a mount (as upstream). */
export const BACKGROUND_SILENCE_MS = 5000;

/** Sizes of the chunk cache (`[cache]`). */
export function cacheOptions(c: Config): ChunkCacheOptions {
  return { maxDiskBytes: c.cache.max_size, maxMemoryBytes: c.cache.memory_size };
}

/** The background scheduler (`max_concurrency`). */
export function backgroundScheduler(c: Config): BackgroundScheduler {
  return new BackgroundScheduler(c.max_concurrency, BACKGROUND_SILENCE_MS);
}

/** FUSE settings of a layer mount (`[fuse]`, `debug`). */
export function mountOptions(c: Config, log: Logger): LayerMountOptions {
  return {
    attrTimeoutSec: c.fuse.attr_timeout,
    entryTimeoutSec: c.fuse.entry_timeout,
    debug: c.debug,
    log,
  };
}

/**
 * Starts prefetch (unless `noprefetch` or `prefetch: false`) and background fetch (unless
 * `no_background_fetch` or `background: false`) of a layer; `prefetchSize` overrides
 * `prefetch_size` (the prefetch label). Returns the number of bytes being prefetched.
 */
export function startFetching(
  layer: Layer,
  c: Config,
  opts: { prefetchSize?: number; prefetch?: boolean; background?: boolean } = {},
): number {
  let prefetch = 0;
  if (!c.noprefetch && opts.prefetch !== false) {
    prefetch = layer.prefetchSize(opts.prefetchSize ?? c.prefetch_size);
    layer.startPrefetch(prefetch, c.blob.prefetch_chunk_size);
  }
  if (!c.no_background_fetch && opts.background !== false) layer.startBackgroundFetch();
  return prefetch;
}
