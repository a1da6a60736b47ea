/**
 * The daemon's status at a glance, one document for `GET /v1/status`, `stargz status` and the
 * page at `/`: per image and layer whether it is mounted lazily (and how much of it is local)
 * or fell back to a full pull (and why), cache use, and restore failures. The valibot schema is
 * what `stargz status` checks the answer against: it comes over a socket from another process.
 */
import * as v from "valibot";

const LayerSchema = v.object({
  digest: v.string(),
  /** "remote": mounted lazily through FUSE; "fallback": containerd pulls it in full. */
  mode: v.picklist(["remote", "fallback"]),
  size: v.optional(v.number()),
  fetchedSize: v.optional(v.number()),
  fetchedPercent: v.optional(v.number()),
  mountpoint: v.optional(v.string()),
  /** Why the layer fell back. */
  reason: v.optional(v.string()),
  /** The layer's last error (e.g. a failed background fetch) while mounted. */
  error: v.optional(v.string()),
});

/** The document `GET /v1/status` answers. */
export const StatusSchema = v.object({
  daemon: v.object({
    version: v.string(),
    /** The config file in use, and whether it exists (absent: built-in defaults). */
    config: v.string(),
    configFound: v.boolean(),
    root: v.string(),
    address: v.string(),
    pid: v.number(),
    startedAt: v.string(),
  }),
  images: v.array(v.object({ ref: v.string(), layers: v.array(LayerSchema) })),
  /** Counters, plus `diskError` (a string) when the disk part of the cache failed. */
  cache: v.record(v.string(), v.union([v.number(), v.string()])),
  restore: v.object({
    pending: v.array(v.string()),
    failed: v.array(v.object({ name: v.string(), mountpoint: v.string(), error: v.string() })),
  }),
});

/** The daemon's status. */
export type Status = v.InferOutput<typeof StatusSchema>;
/** One layer of {@link Status}. */
export type StatusLayer = v.InferOutput<typeof LayerSchema>;

/** A mounted layer, as the filesystem reports it. */
export interface MountedInput {
  mountpoint: string;
  ref: string;
  digest: string;
  state: {
    digest: string;
    size: number;
    fetchedSize: number;
    fetchedPercent: number;
    error?: string;
  };
}

/** A fallback, as the snapshotter remembers it. */
export interface FallbackInput {
  ref?: string;
  digest?: string;
  target: string;
  reason: string;
}

/** The label of layers whose Prepare named no image. */
export const UNKNOWN_IMAGE = "(no image labels)";

/**
 * Groups mounted layers and fallbacks by image. A layer mounted now wins over an older
 * fallback of the same digest; of several fallbacks of one layer the latest is shown.
 */
export function groupByImage(
  mounted: readonly MountedInput[],
  fallbacks: readonly FallbackInput[],
): Status["images"] {
  const images = new Map<string, Map<string, StatusLayer>>();
  const image = (ref: string) => {
    let m = images.get(ref);
    if (!m) images.set(ref, m = new Map());
    return m;
  };
  const remote = new Set(mounted.map((l) => l.digest));
  for (const f of fallbacks) {
    const digest = f.digest ?? f.target;
    if (remote.has(digest)) continue;
    image(f.ref ?? UNKNOWN_IMAGE).set(digest, { digest, mode: "fallback", reason: f.reason });
  }
  for (const l of mounted) {
    image(l.ref).set(l.digest, {
      digest: l.digest,
      mode: "remote",
      size: l.state.size,
      fetchedSize: l.state.fetchedSize,
      fetchedPercent: l.state.fetchedPercent,
      mountpoint: l.mountpoint,
      ...(l.state.error ? { error: l.state.error } : {}),
    });
  }
  return [...images].sort(([a], [b]) => a.localeCompare(b)).map(([ref, layers]) => ({
    ref,
    layers: [...layers.values()],
  }));
}
