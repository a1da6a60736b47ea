/**
 * containerd snapshotter semantics (overlayfs layout, metadata store, mounts) with remote
 * snapshots served by a pluggable {@link FileSystem}.
 */
export {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  SnapshotError,
  type SnapshotErrorCode,
  UnavailableError,
} from "./errors.ts";
export { type FieldLookup, type Filter, parseFilters } from "./filter.ts";
export type { FileSystem } from "./remote.ts";
export {
  CRI_IMAGE_LAYERS_LABEL,
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  InvalidLabelError,
  REMOTE_LABEL,
  REMOTE_LABEL_VALUE,
  REMOTE_SNAPSHOT_LOG_KEY,
  REMOTE_URLS_LABEL,
  type RemoteSource,
  remoteSource,
  STARGZ_DIGEST_LABEL,
  STARGZ_LAYERS_LABEL,
  STARGZ_REFERENCE_LABEL,
  TARGET_SNAPSHOT_LABEL,
} from "../labels/mod.ts";
export {
  type Fallback,
  RestoreError,
  type RestoreFailure,
  type RestoreReport,
  type SnapshotStep,
  Snapshotter,
  type SnapshotterOptions,
} from "./snapshotter.ts";
export type { Mount, SnapshotInfo, SnapshotKind, Timestamp, Usage } from "./types.ts";
export { mountAll } from "./mount.ts";
