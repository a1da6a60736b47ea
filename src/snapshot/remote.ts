/**
 * The cut between the snapshotter and the lazy layer filesystem: the snapshotter decides *when*
 * a layer is mounted remotely; a {@link FileSystem} decides *how* (FUSE, eStargz, registry).
 * The labels that describe a remote layer are in `src/labels`.
 */

/**
 * A filesystem that can present a layer at a mount point without it being unpacked, the
 * equivalent of the Go snapshotter's `FileSystem`.
 */
export interface FileSystem {
  /**
   * Mounts the layer the labels describe at `mountpoint` (an existing empty directory). On
   * failure it must leave the directory as it found it.
   */
  mount(mountpoint: string, labels: Record<string, string>): Promise<void>;
  /** Resolves when the layer at `mountpoint` can still be served; rejects with the reason. */
  check(mountpoint: string, labels: Record<string, string>): Promise<void>;
  /** Unmounts and forgets the layer at `mountpoint`. */
  unmount(mountpoint: string): Promise<void>;
  /**
   * True when the mount found at `mountpoint` on start is a live layer handed over by the
   * previous process, which {@link FileSystem.mount} serves again: it is not a stale mount.
   */
  adoptable?(mountpoint: string): boolean;
  /** Called once every remote snapshot was mounted again on start: drop what nobody claimed. */
  releaseUnclaimed?(): Promise<void>;
  /** True when the layers stay mounted for the next process when this one closes. */
  handsOver?(): boolean;
}
