/** The data the snapshotter hands out, shaped like containerd's `snapshots.Info`/`Usage`/`Mount`. */

/** containerd's snapshot kinds. */
export type SnapshotKind = "view" | "active" | "committed";

/** A point in time as protobuf carries it: seconds since the epoch plus nanoseconds. */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** What Stat, Update and List report about a snapshot. */
export interface SnapshotInfo {
  name: string;
  /** Name of the committed parent, or "" for a base snapshot. */
  parent: string;
  kind: SnapshotKind;
  created: Timestamp;
  updated: Timestamp;
  labels: Record<string, string>;
}

/** Disk usage of a snapshot's own layer (not its parents). */
export interface Usage {
  /** Bytes allocated (st_blocks × 512, hard links counted once). */
  size: number;
  inodes: number;
}

/** One mount(2) call, as containerd performs it. */
export interface Mount {
  type: string;
  source: string;
  options: string[];
}
