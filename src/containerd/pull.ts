/**
 * An image pull into containerd that lets a remote snapshotter mount layers instead of
 * downloading them (upstream's `ctr-remote image rpull`): manifest, index and config go to the
 * content store with the garbage-collection labels containerd's own pull sets, and every layer
 * is prepared through containerd's snapshot service with the remote-snapshot labels. A layer the
 * snapshotter mounts comes back as AlreadyExists and is never fetched; any other layer is
 * fetched into the content store, applied with containerd's diff service and committed, as
 * containerd's unpacker does. Everything happens inside a lease, so a failed pull leaves
 * nothing that outlives it; the image record, written last, then holds it all.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  CRI_IMAGE_LAYERS_LABEL,
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  PREFETCH_SIZE_LABEL,
  SKIP_VERIFY_LABEL,
  STARGZ_DIGEST_LABEL,
  STARGZ_LAYERS_LABEL,
  STARGZ_REFERENCE_LABEL,
  TARGET_SNAPSHOT_LABEL,
} from "../labels/mod.ts";
import {
  type Descriptor,
  formatReference,
  type Platform,
  type RegistryClient,
  RegistryError,
} from "../registry/mod.ts";
import {
  type ContainerdClient,
  ContainerdError,
  type ContainerdMount,
  type ContentWriter,
  isLockedError,
} from "./client.ts";

/** Upstream rpull's prefetch size label value (10 MiB). */
export const DEFAULT_PREFETCH_SIZE = 10 * 1024 * 1024;
/** How long the pull's lease protects its content if the pull dies (containerd's 24 h). */
const LEASE_EXPIRE_SEC = 24 * 60 * 60;
/** containerd's limit on a label's key plus value. */
const MAX_LABEL_SIZE = 4096;
/** Annotations a layer passes on to its snapshot (containerd's FilterInheritedLabels). */
const INHERITED_LABEL_PREFIX = "containerd.io/snapshot/";
/** The manifest digest label containerd's CRI plugin sets next to its other source labels. */
const CRI_MANIFEST_DIGEST_LABEL = "containerd.io/snapshot/cri.manifest-digest";
const UNCOMPRESSED_LABEL = "containerd.io/uncompressed";
const DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source.";

/** Options of {@link pullImage}. */
export interface PullOptions {
  /** The snapshotter to unpack into (`stargz`). */
  snapshotter: string;
  platform?: Platform;
  /** Set the labels containerd's CRI plugin sets instead of the stargz tools' ones. */
  containerdLabels?: boolean;
  /** Ask the snapshotter to mount layers without checking their TOC digest. */
  skipContentVerify?: boolean;
  /** Value of the prefetch size label (default {@link DEFAULT_PREFETCH_SIZE}). */
  prefetchSize?: number;
  /** Called as each layer is settled. */
  onLayer?: (layer: PulledLayer) => void;
  /** Called as bytes of a layer being fetched arrive. */
  onFetch?: (digest: string, bytes: number, total: number) => void;
}

/** What happened to one layer. */
export interface PulledLayer {
  digest: string;
  /** `remote`: mounted by the snapshotter; `fetched`: downloaded and applied; `present`: there. */
  state: "remote" | "fetched" | "present";
  /** Bytes downloaded for it. */
  bytes: number;
}

/** The outcome of {@link pullImage}. */
export interface PullResult {
  /** The image record's name. */
  name: string;
  /** What the image record points to. */
  target: Descriptor;
  layers: PulledLayer[];
}

/** An image pull that failed; the message says at which step. */
export class PullError extends Error {
  override name = "PullError";
}

function sha256(s: string): string {
  return `sha256:${createHash("sha256").update(s).digest("hex")}`;
}

/** containerd's chain IDs of `diffIds`, base first. */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const id of diffIds) out.push(out.length ? sha256(`${out[out.length - 1]} ${id}`) : id);
  return out;
}

/** `digests` joined with commas, as many as fit into a label next to `key`. */
function listLabel(key: string, digests: readonly string[]): string {
  let value = "";
  for (const d of digests) {
    const next = value ? `${value},${d}` : d;
    if (key.length + next.length > MAX_LABEL_SIZE) break;
    value = next;
  }
  return value;
}

/** The labels a layer's Prepare carries: inherited annotations plus the source labels. */
export function layerLabels(
  ref: string,
  manifestDigest: string,
  layers: readonly Descriptor[],
  index: number,
  chainId: string,
  opts: Pick<PullOptions, "containerdLabels" | "skipContentVerify" | "prefetchSize">,
): Record<string, string> {
  const layer = layers[index];
  const labels: Record<string, string> = {};
  for (const [k, val] of Object.entries(layer.annotations ?? {})) {
    if (k.startsWith(INHERITED_LABEL_PREFIX)) labels[k] = val;
  }
  const neighbours = layers.slice(index).map((l) => l.digest);
  if (opts.containerdLabels) {
    labels[CRI_IMAGE_REF_LABEL] = ref;
    labels[CRI_MANIFEST_DIGEST_LABEL] = manifestDigest;
    labels[CRI_LAYER_DIGEST_LABEL] = layer.digest;
    labels[CRI_IMAGE_LAYERS_LABEL] = listLabel(CRI_IMAGE_LAYERS_LABEL, neighbours);
  } else {
    labels[STARGZ_REFERENCE_LABEL] = ref;
    labels[STARGZ_DIGEST_LABEL] = layer.digest;
    labels[STARGZ_LAYERS_LABEL] = listLabel(STARGZ_LAYERS_LABEL, neighbours);
    labels[PREFETCH_SIZE_LABEL] = String(opts.prefetchSize ?? DEFAULT_PREFETCH_SIZE);
  }
  if (opts.skipContentVerify) labels[SKIP_VERIFY_LABEL] = "true";
  labels[TARGET_SNAPSHOT_LABEL] = chainId;
  return labels;
}

/** The host name without port, as containerd keys its distribution source label. */
function hostname(domain: string): string {
  return new URL(`dummy://${domain}`).hostname.replace(/^\[(.*)\]$/, "$1");
}

/** containerd's unpack key (`snapshots.UnpackKeyFormat`): unique, naming the chain ID. */
function unpackKey(chainId: string): string {
  const unique = `${Date.now()}${process.hrtime.bigint() % 1_000_000n}-${
    randomBytes(9).toString("base64url")
  }`;
  return `extract-${unique} ${chainId}`;
}

/** containerd's ingest ref for a descriptor (`remotes.MakeRefKey`). */
function ingestRef(kind: "manifest" | "index" | "config" | "layer", digest: string): string {
  return `${kind}-${digest}`;
}

/** How long a pull waits for another one writing the same blob (containerd's client waits too). */
const LOCKED_WAIT_MS = 120_000;

/**
 * Writes blob `desc` through `fill` unless the content store has it; resolves to false when it
 * was there already. While another pull holds the same ingest ref, waits for it with backoff
 * (its blob then usually just appears), as containerd's `content.OpenWriter` does.
 */
async function ingest(
  ctd: ContainerdClient,
  ref: string,
  desc: { digest: string; size: number },
  labels: Record<string, string>,
  fill: (w: ContentWriter) => Promise<void>,
): Promise<boolean> {
  const deadline = Date.now() + LOCKED_WAIT_MS;
  for (let attempt = 0;; attempt++) {
    if (await ctd.contentInfo(desc.digest)) return false;
    let w: ContentWriter | undefined;
    try {
      w = await ctd.openContentWriter(ref, desc, labels);
    } catch (err) {
      if (!isLockedError(err) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** attempt)));
      continue;
    }
    if (!w) return false;
    try {
      await fill(w);
      await w.commit();
      return true;
    } catch (err) {
      w.abort();
      throw err;
    }
  }
}

function isKind(err: unknown, kind: ContainerdError["kind"]): boolean {
  return err instanceof ContainerdError && err.kind === kind;
}

/** Pulls `ref` into containerd, unpacking it into `opts.snapshotter`. */
export async function pullImage(
  ctd: ContainerdClient,
  registry: RegistryClient,
  ref: string,
  opts: PullOptions,
): Promise<PullResult> {
  // The lease comes first, as with ctr: a containerd that is not there fails before any download.
  await ctd.withLease(LEASE_EXPIRE_SEC);
  try {
    const img = await registry.resolve(ref, opts.platform ? { platform: opts.platform } : {});
    const name = formatReference(img.ref);
    const diffIds = img.config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== img.layers.length) {
      throw new PullError(
        `${name}: ${img.layers.length} layers but ${diffIds.length} diff IDs in the config`,
      );
    }
    const source = {
      [`${DISTRIBUTION_SOURCE_PREFIX}${hostname(img.ref.domain)}`]: img.ref.repository,
    };

    const store = async (
      kind: "manifest" | "index" | "config",
      desc: { digest: string; size: number },
      bytes: Uint8Array,
      labels: Record<string, string>,
    ) => {
      const all = { ...labels, ...source };
      const written = await ingest(
        ctd,
        ingestRef(kind, desc.digest),
        desc,
        all,
        (w) => w.write(bytes),
      );
      if (written) return;
      const info = await ctd.contentInfo(desc.digest);
      if (!info) throw new PullError(`${kind} ${desc.digest} vanished from the content store`);
      const missing = Object.fromEntries(
        Object.entries(all).filter(([k, val]) => info.labels[k] !== val),
      );
      if (Object.keys(missing).length) await ctd.contentSetLabels(desc.digest, missing);
    };

    const manifestLabels: Record<string, string> = {
      "containerd.io/gc.ref.content.config": img.manifest.config.digest,
      ...Object.fromEntries(
        img.layers.map((l, i) => [`containerd.io/gc.ref.content.l.${i}`, l.digest]),
      ),
    };
    await store("config", img.manifest.config, img.configBytes, {});
    await store(
      "manifest",
      { digest: img.manifestDigest, size: img.manifestBytes.byteLength },
      img.manifestBytes,
      manifestLabels,
    );
    if (img.index?.kind === "index") {
      const indexLabels = Object.fromEntries(
        img.index.index.manifests.map((m, i) => [`containerd.io/gc.ref.content.m.${i}`, m.digest]),
      );
      const desc = { digest: img.index.digest, size: img.index.bytes.byteLength };
      await store("index", desc, img.index.bytes, indexLabels);
    }

    const chain = chainIds(diffIds);
    const layers: PulledLayer[] = [];
    for (let i = 0; i < img.layers.length; i++) {
      const pulled = await unpackLayer(ctd, registry, {
        name,
        manifestDigest: img.manifestDigest,
        layers: img.layers,
        index: i,
        chainId: chain[i],
        parent: i > 0 ? chain[i - 1] : "",
        diffId: diffIds[i],
        source,
        opts,
      });
      layers.push(pulled);
      opts.onLayer?.(pulled);
    }
    if (chain.length) {
      const gcLabel = `containerd.io/gc.ref.snapshot.${opts.snapshotter}`;
      await store("config", img.manifest.config, img.configBytes, {
        [gcLabel]: chain[chain.length - 1],
      });
    }

    const target: Descriptor = {
      mediaType: img.mediaType,
      digest: img.digest,
      size: img.index ? img.index.bytes.byteLength : img.manifestBytes.byteLength,
    };
    const existing = await ctd.getImage(name);
    if (existing?.target.digest !== target.digest) {
      await ctd.putImage({ name, labels: {}, target });
    }
    // The image record holds everything now; a lease that cannot be deleted expires by itself.
    await ctd.releaseLease().catch(() => {});
    return { name, target, layers };
  } catch (err) {
    // A failed pull leaves nothing behind, at once rather than at the next collection.
    await ctd.releaseLease({ collect: true }).catch(() => {});
    throw err;
  }
}

interface LayerJob {
  name: string;
  manifestDigest: string;
  layers: readonly Descriptor[];
  index: number;
  chainId: string;
  parent: string;
  diffId: string;
  source: Record<string, string>;
  opts: PullOptions;
}

async function unpackLayer(
  ctd: ContainerdClient,
  registry: RegistryClient,
  job: LayerJob,
): Promise<PulledLayer> {
  const sn = job.opts.snapshotter;
  const desc = job.layers[job.index];
  if (await ctd.statSnapshot(sn, job.chainId)) {
    return { digest: desc.digest, state: "present", bytes: 0 };
  }
  const labels = layerLabels(
    job.name,
    job.manifestDigest,
    job.layers,
    job.index,
    job.chainId,
    job.opts,
  );
  let key = "";
  let mounts: ContainerdMount[] | undefined;
  for (let attempt = 1; attempt <= 3 && !mounts; attempt++) {
    key = unpackKey(job.chainId);
    try {
      mounts = await ctd.prepareSnapshot(sn, key, job.parent, labels);
    } catch (err) {
      if (!isKind(err, "already-exists")) {
        throw new PullError(`layer ${desc.digest}: prepare: ${(err as Error).message}`);
      }
      // The snapshotter mounted the layer itself and committed it under the chain ID.
      if (await ctd.statSnapshot(sn, job.chainId)) {
        return { digest: desc.digest, state: "remote", bytes: 0 };
      }
    }
  }
  if (!mounts) throw new PullError(`layer ${desc.digest}: snapshot ${job.chainId} did not appear`);

  try {
    let bytes = 0;
    await ingest(ctd, ingestRef("layer", desc.digest), desc, job.source, async (w) => {
      bytes = 0;
      await registry.copyBlob(job.name, desc, {
        write: (chunk: Uint8Array) => {
          bytes += chunk.byteLength;
          job.opts.onFetch?.(desc.digest, bytes, desc.size);
          return w.write(chunk);
        },
      });
    });
    const applied = await ctd.applyLayer(desc, mounts);
    if (applied !== job.diffId) {
      throw new PullError(
        `layer ${desc.digest}: applied tar is ${applied}, the config says ${job.diffId}`,
      );
    }
    try {
      await ctd.commitSnapshot(sn, job.chainId, key, labels);
    } catch (err) {
      // Another pull committed the same chain meanwhile: the layer is there.
      if (!isKind(err, "already-exists")) throw err;
      await ctd.removeSnapshot(sn, key).catch(() => {});
    }
    await ctd.contentSetLabels(desc.digest, { [UNCOMPRESSED_LABEL]: applied });
    return { digest: desc.digest, state: "fetched", bytes };
  } catch (err) {
    await ctd.removeSnapshot(sn, key).catch(() => {});
    if (err instanceof PullError || err instanceof RegistryError) throw err;
    throw new PullError(`layer ${desc.digest}: ${(err as Error).message}`);
  }
}
