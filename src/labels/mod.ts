/**
 * The label vocabulary shared by containerd, the snapshotter and the lazy layer filesystem:
 * which labels name a remote layer's source (CRI labels first, then the stargz tools' labels)
 * and how a remote snapshot is marked. A bottom module so that `snapshot/` and `fs/` can both
 * use it without depending on each other.
 */

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

/** Where a remote layer comes from, decoded from its Prepare labels. */
export interface RemoteSource {
  /** Image reference the layer belongs to. */
  ref: string;
  /** Digest of the layer blob. */
  digest: string;
  /** Digests of the image's layers (this one and its neighbours), for prefetching in parallel. */
  layers: string[];
  /** Alternative URLs of the blob. */
  urls: string[];
}

function list(value: string | undefined): string[] {
  return value ? value.split(",").filter((s) => s !== "") : [];
}

/**
 * Reads the source of a remote layer from Prepare labels: the CRI labels when present, else
 * the stargz labels. Returns undefined when neither names both an image and a layer digest.
 */
export function remoteSource(labels: Record<string, string>): RemoteSource | undefined {
  const urls = list(labels[REMOTE_URLS_LABEL]);
  const criRef = labels[CRI_IMAGE_REF_LABEL];
  const criDigest = labels[CRI_LAYER_DIGEST_LABEL];
  if (criRef && criDigest) {
    return { ref: criRef, digest: criDigest, layers: list(labels[CRI_IMAGE_LAYERS_LABEL]), urls };
  }
  const ref = labels[STARGZ_REFERENCE_LABEL];
  const digest = labels[STARGZ_DIGEST_LABEL];
  if (ref && digest) return { ref, digest, layers: list(labels[STARGZ_LAYERS_LABEL]), urls };
  return undefined;
}

/** Layer annotation (passed as a Prepare label) holding the TOC digest. */
export const TOC_DIGEST_LABEL = "containerd.io/snapshot/stargz/toc.digest";
/** Label that, with `allow_no_verification`, lets a layer without TOC digest mount. */
export const SKIP_VERIFY_LABEL = "containerd.io/snapshot/remote/stargz.skipverify";
/** Label overriding `prefetch_size` for one layer (bytes). */
export const PREFETCH_SIZE_LABEL = "containerd.io/snapshot/remote/stargz.prefetch";
