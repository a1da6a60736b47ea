/**
 * Typed snapshotter errors, thrown wherever the condition is found and translated to transport
 * codes only at the edge (gRPC status in src/service/snapshots.ts), as containerd's errdefs do.
 */

/** The kinds of failure containerd's proxy client distinguishes. */
export type SnapshotErrorCode =
  | "not-found"
  | "already-exists"
  | "failed-precondition"
  | "invalid-argument"
  | "unavailable";

/** Base class of every error the snapshotter reports on purpose. */
export abstract class SnapshotError extends Error {
  /** Which containerd error class this is. */
  abstract readonly code: SnapshotErrorCode;
}

/** The snapshot (or its parent) does not exist. */
export class NotFoundError extends SnapshotError {
  override name = "NotFoundError";
  readonly code = "not-found";
}

/** The key or name is taken; also the answer to a Prepare that became a remote snapshot. */
export class AlreadyExistsError extends SnapshotError {
  override name = "AlreadyExistsError";
  readonly code = "already-exists";
}

/** The snapshot is in the wrong state for the operation (e.g. removing one with children). */
export class FailedPreconditionError extends SnapshotError {
  override name = "FailedPreconditionError";
  readonly code = "failed-precondition";
}

/** The request itself is malformed (bad filter, immutable field, non-committed parent). */
export class InvalidArgumentError extends SnapshotError {
  override name = "InvalidArgumentError";
  readonly code = "invalid-argument";
}

/** A remote layer this snapshot stands on cannot be served right now. */
export class UnavailableError extends SnapshotError {
  override name = "UnavailableError";
  readonly code = "unavailable";
}
