/**
 * The label vocabulary shared by containerd, the snapshotter and the lazy layer filesystem:
 * which labels name a remote layer's source (CRI labels first, then the stargz tools' labels)
 * and how a remote snapshot is marked. A bottom module so that `snapshot/` and `fs/` can both
 * use it without depending on each other.
 */
import * as v from "valibot";
import { type Digest, DigestSchema, parseReference } from "../registry/mod.ts";

/** Label containerd puts on an unpack Prepare: the name to commit the layer under. */
export const TARGET_SNAPSHOT_LABEL = "containerd.io/snapshot.ref";
/** Label marking a committed snapshot whose layer is mounted by the remote filesystem. */
export const REMOTE_LABEL = "containerd.io/snapshot/remote";
/** Value of {@link REMOTE_LABEL} (the Go snapshotter's, which tools match on). */
export const REMOTE_LABEL_VALUE = "remote snapshot";
/** Log field recording whether a Prepare became a remote snapshot ("true"/"false"). */
export const REMOTE_SNAPSHOT_LOG_KEY = "remote-snapshot-prepared";

/** Source labels containerd's CRI plugin sets (`disable_snapshot_annotations = false`). */
export const CRI_IMAGE_REF_LABEL = "containerd.io/snapshot/cri.image-ref";
/** Digest of the layer being prepared, set by the CRI plugin. */
export const CRI_LAYER_DIGEST_LABEL = "containerd.io/snapshot/cri.layer-digest";
/** Comma-separated digests of the image's layers from this one up, set by the CRI plugin. */
export const CRI_IMAGE_LAYERS_LABEL = "containerd.io/snapshot/cri.image-layers";
/** Source labels the stargz tools (`rpull`) set. */
export const STARGZ_REFERENCE_LABEL = "containerd.io/snapshot/remote/stargz.reference";
/** Layer digest label set by the stargz tools. */
export const STARGZ_DIGEST_LABEL = "containerd.io/snapshot/remote/stargz.digest";
/** Neighbouring layer digests label set by the stargz tools. */
export const STARGZ_LAYERS_LABEL = "containerd.io/snapshot/remote/stargz.layers";
/** Extra URLs of the layer blob (comma separated). */
export const REMOTE_URLS_LABEL = "containerd.io/snapshot/remote/urls";

/**
 * Most layer digests a layers label may list. Docker and containerd stop at 127 layers (the
 * overlayfs lowerdir limit); the margin leaves room for images built by other tools.
 */
export const MAX_LISTED_LAYERS = 512;
/** Most URLs the urls label may list. */
export const MAX_LISTED_URLS = 16;

/** Prepare labels that name a remote layer but cannot be acted on; the message says why. */
export class InvalidLabelError extends Error {
  override name = "InvalidLabelError";
}

/** Where a remote layer comes from, decoded and validated from its Prepare labels. */
export interface RemoteSource {
  /** Image reference the layer belongs to (parsed strictly; may pin a digest). */
  ref: string;
  /** Digest of the layer blob. */
  digest: Digest;
  /** Digests of the image's layers (this one and its neighbours), for prefetching in parallel. */
  layers: Digest[];
  /** Alternative http(s) URLs of the blob. */
  urls: string[];
  /** The TOC digest the layer must have ({@link TOC_DIGEST_LABEL}). */
  tocDigest?: Digest;
  /** Bytes to prefetch instead of the configured amount ({@link PREFETCH_SIZE_LABEL}). */
  prefetchSize?: number;
}

const ReferenceSchema = v.pipe(
  v.string(),
  v.check((s) => {
    try {
      parseReference(s);
      return true;
    } catch {
      return false;
    }
  }, "not a valid image reference"),
);

/** A comma-separated list, bounded before its items are looked at. */
function listOf<T extends v.GenericSchema<string>>(item: T, max: number) {
  return v.pipe(
    v.string(),
    v.transform((s) => s.split(",").filter((x) => x !== "")),
    v.maxLength(max, `more than ${max} items`),
    v.array(item),
  );
}

const HttpUrl = v.pipe(
  v.string(),
  v.url(),
  v.check((s) => /^https?:$/.test(new URL(s).protocol), "not an http(s) URL"),
);

/** Only the labels {@link remoteSource} acts on; each is checked before any of them is used. */
const SourceLabels = v.object({
  ref: ReferenceSchema,
  digest: DigestSchema,
  layers: v.optional(listOf(DigestSchema, MAX_LISTED_LAYERS), ""),
  urls: v.optional(listOf(HttpUrl, MAX_LISTED_URLS), ""),
  tocDigest: v.optional(DigestSchema),
  prefetchSize: v.optional(
    v.pipe(v.string(), v.regex(/^\d{1,15}$/, "not a byte count"), v.transform(Number)),
  ),
});

/**
 * Reads the source of a remote layer from Prepare labels: the CRI labels when present, else
 * the stargz labels. Returns undefined when neither names both an image and a layer digest;
 * throws {@link InvalidLabelError} when one of the labels it would act on does not parse (a
 * digest that is not `sha256:<hex>` must never reach a URL, a file name or a metric label).
 */
export function remoteSource(labels: Record<string, string>): RemoteSource | undefined {
  const pick = (ref: string, digest: string, layers: string) =>
    labels[ref] && labels[digest] ? { ref, digest, layers } : undefined;
  const set = pick(CRI_IMAGE_REF_LABEL, CRI_LAYER_DIGEST_LABEL, CRI_IMAGE_LAYERS_LABEL) ??
    pick(STARGZ_REFERENCE_LABEL, STARGZ_DIGEST_LABEL, STARGZ_LAYERS_LABEL);
  if (!set) return undefined;
  // Which label each parsed field comes from, to name it when it is refused.
  const names = {
    ...set,
    urls: REMOTE_URLS_LABEL,
    tocDigest: TOC_DIGEST_LABEL,
    prefetchSize: PREFETCH_SIZE_LABEL,
  };
  const input = Object.fromEntries(
    Object.entries(names).flatMap(([k, label]) =>
      labels[label] !== undefined ? [[k, labels[label]]] : []
    ),
  );
  const r = v.safeParse(SourceLabels, input);
  if (!r.success) {
    const issue = r.issues[0];
    const key = v.getDotPath(issue)?.split(".")[0] as keyof typeof names | undefined;
    const label = key ? names[key] : "labels";
    throw new InvalidLabelError(`label ${label}: ${issue.message}`);
  }
  const { tocDigest, prefetchSize, ...rest } = r.output;
  return {
    ...rest,
    ...(tocDigest !== undefined ? { tocDigest } : {}),
    ...(prefetchSize !== undefined ? { prefetchSize } : {}),
  };
}

/** Layer annotation (passed as a Prepare label) holding the TOC digest. */
export const TOC_DIGEST_LABEL = "containerd.io/snapshot/stargz/toc.digest";
/** Label that, with `allow_no_verification`, lets a layer without TOC digest mount. */
export const SKIP_VERIFY_LABEL = "containerd.io/snapshot/remote/stargz.skipverify";
/** Label overriding `prefetch_size` for one layer (bytes). */
export const PREFETCH_SIZE_LABEL = "containerd.io/snapshot/remote/stargz.prefetch";
