/**
 * One layer blob mounted on its own, as `stargz mount` does: its own chunk cache, with the daemon
 * configuration's cache, FUSE and fetch settings.
 */
import type { Config } from "../config/mod.ts";
import type { BlobReader } from "../estargz/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Digest } from "../registry/mod.ts";
import { ChunkCache } from "./_chunk_cache.ts";
import { backgroundScheduler, cacheOptions, mountOptions, startFetching } from "./_config.ts";
import { mountLayer } from "./_layer_fuse.ts";
import type { RangeSource } from "./_layer_reader.ts";
import { Layer } from "./layer.ts";

/** What {@link mountBlob} mounts, and how. */
export interface BlobMountOptions {
  /** `sha256:…` of the compressed blob. */
  digest: Digest;
  /** The blob: ranges for the read path, plain reads for the footer and TOC. */
  source: RangeSource & BlobReader;
  /** Refuse the layer unless its TOC digest equals this. */
  expectedTocDigest?: string;
  /** The blob's last bytes when already fetched (the suffix read that located it). */
  tail?: Uint8Array;
  /** Directory of the chunk cache. */
  cacheDir: string;
  config: Config;
  log: Logger;
  /** Prefetch as the configuration says (default true). */
  prefetch?: boolean;
  /** Background fetch as the configuration says (default true). */
  background?: boolean;
}

/** A mounted blob. */
export interface BlobMount {
  readonly mountpoint: string;
  /** The digest of the layer's TOC. */
  readonly tocDigest: string;
  /** Resolves when the kernel ended the session (e.g. `umount` from outside). */
  readonly closed: Promise<void>;
  /** Stops prefetch and background fetch, and unmounts. */
  unmount(): Promise<void>;
}

/** Opens a layer blob (footer, TOC, tree) and mounts it read-only at `mountpoint`. */
export async function mountBlob(mountpoint: string, opts: BlobMountOptions): Promise<BlobMount> {
  const { config, log } = opts;
  const cache = await ChunkCache.open(opts.cacheDir, cacheOptions(config));
  const layer = await Layer.open({
    digest: opts.digest,
    source: opts.source,
    expectedTocDigest: opts.expectedTocDigest,
    tail: opts.tail,
    cache,
    scheduler: backgroundScheduler(config),
    log,
    minFetchBytes: config.blob.chunk_size,
  });
  const mount = await mountLayer(layer, mountpoint, mountOptions(config, log));
  startFetching(layer, config, { prefetch: opts.prefetch, background: opts.background });
  return {
    mountpoint,
    tocDigest: layer.blob.tocDigest,
    closed: mount.closed,
    async unmount() {
      layer.close();
      await mount.unmount();
    },
  };
}
