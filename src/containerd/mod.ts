/**
 * containerd as a client sees it: its gRPC API over the unix socket (content, images, leases,
 * snapshots, diff), and an image pull that lets the remote snapshotter mount eStargz layers.
 */
export {
  ContainerdClient,
  type ContainerdClientOptions,
  type ContainerdDescriptor,
  ContainerdError,
  type ContainerdErrorKind,
  type ContainerdMount,
  type ContentInfo,
  type ContentWriter,
  type ImageRecord,
  isLockedError,
  type SnapshotStat,
} from "./client.ts";
export {
  chainIds,
  DEFAULT_PREFETCH_SIZE,
  layerLabels,
  type PulledLayer,
  PullError,
  pullImage,
  type PullOptions,
  type PullResult,
} from "./pull.ts";
