/**
 * The face a filesystem shows to the FUSE server: a small read-only node API. The server owns
 * the kernel protocol (requests, replies, lookup counts, timeouts); the filesystem only answers
 * questions about nodes it names itself.
 */
import type { Logger } from "../log/mod.ts";

/**
 * A node id chosen by the filesystem: a positive safe integer, stable while the kernel holds a
 * reference to it (see {@link FileSystem.forget}). The root directory is always {@link ROOT_ID}.
 */
export type NodeId = number;

/** The node id of the root directory. */
export const ROOT_ID: NodeId = 1;

/** File type bits of `mode`. */
export const S_IFMT = 0o170000;
/** Directory. */
export const S_IFDIR = 0o040000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Symbolic link. */
export const S_IFLNK = 0o120000;
/** Character device. */
export const S_IFCHR = 0o020000;
/** Block device. */
export const S_IFBLK = 0o060000;
/** Named pipe. */
export const S_IFIFO = 0o010000;

/** A value or a promise of it: filesystems may answer synchronously (faster) or asynchronously. */
export type MaybePromise<T> = T | Promise<T>;

/** File attributes, as `stat(2)` will show them. Times are seconds + nanoseconds since the epoch. */
export interface Attr {
  /** File type and permission bits (`S_IFREG | 0o644`, …). */
  mode: number;
  /** Size in bytes (the target length for symlinks). */
  size: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Device number of character/block devices (`major << 8 | minor` for small numbers). */
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Defaults to the mtime. */
  atimeSec?: number;
  atimeNsec?: number;
  /** Defaults to the mtime. */
  ctimeSec?: number;
  ctimeNsec?: number;
  /** 512-byte blocks; defaults to `ceil(size / 512)`. */
  blocks?: number;
  /** Preferred I/O size; defaults to 4096. */
  blksize?: number;
}

/** A node found by name: its id and attributes (the answer to LOOKUP, and each READDIRPLUS entry). */
export interface Entry {
  node: NodeId;
  attr: Attr;
  /** Distinguishes reuses of a node id; 0 when ids are never reused. */
  generation?: number;
}

/** Who asks, and a signal that fires when the kernel interrupts the request or the mount ends. */
export interface RequestContext {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
  /** Aborted on FUSE_INTERRUPT or unmount; only valid while the call runs. */
  readonly signal: AbortSignal;
}

/** Receives directory entries for one READDIR/READDIRPLUS reply. */
export interface DirectorySink {
  /**
   * Adds `name` → `entry`. `next` is the cookie that resumes the listing right after this entry
   * (it comes back as `cookie` in the next {@link FileSystem.readdir} call). Returns false, without
   * adding, when the reply is full: stop there. "." and ".." are ordinary names here (the server
   * knows the kernel takes no reference on them).
   */
  add(name: string, next: number, entry: Entry): boolean;
}

/** Filesystem totals for statfs(2). */
export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

/** What OPEN/OPENDIR answer: a handle passed back to read/readdir/release (0 when unused). */
export interface OpenResult {
  fh: number;
  /** Overrides the mount's {@link MountOptions.keepCache} for this open. */
  keepCache?: boolean;
  /** Bypass the page cache (for content that is generated per read). */
  directIo?: boolean;
}

/**
 * A read-only filesystem served over FUSE. Every method may return a value or a promise; errors
 * are thrown as `FuseError(errno)` (Node system errors with a known `code` work too). Write-type
 * requests never reach it: the server answers EROFS.
 */
export interface FileSystem {
  /** Finds `name` in directory `parent`; null/undefined means ENOENT. */
  lookup(parent: NodeId, name: string, ctx: RequestContext): MaybePromise<Entry | null | undefined>;
  /** Attributes of `node`. */
  getattr(node: NodeId, ctx: RequestContext): MaybePromise<Attr>;
  /** Target of the symlink `node` (EINVAL when absent). */
  readlink?(node: NodeId, ctx: RequestContext): MaybePromise<string>;
  /** Opens `node` for reading (`flags` as open(2)); default: fh 0. */
  open?(node: NodeId, flags: number, ctx: RequestContext): MaybePromise<OpenResult>;
  /**
   * Reads into `dest` (its length is the requested size) from `offset`; returns the byte count
   * (less than `dest.length` only at end of file). `dest` is valid until the returned promise
   * settles; writing into it directly is what makes reads zero-copy.
   */
  read(
    node: NodeId,
    fh: number,
    offset: number,
    dest: Uint8Array,
    ctx: RequestContext,
  ): MaybePromise<number>;
  /** The last close of an open file. */
  release?(node: NodeId, fh: number): MaybePromise<void>;
  /** Opens a directory; default: fh 0. */
  opendir?(node: NodeId, flags: number, ctx: RequestContext): MaybePromise<OpenResult>;
  /**
   * Lists directory `node` from `cookie` (0 = the start; otherwise a `next` given to the sink
   * earlier) into `sink` until it is full or the listing ends.
   */
  readdir(
    node: NodeId,
    fh: number,
    cookie: number,
    sink: DirectorySink,
    ctx: RequestContext,
  ): MaybePromise<void>;
  /** The last close of an open directory. */
  releasedir?(node: NodeId, fh: number): MaybePromise<void>;
  /** statfs(2) totals; default: zeros with 4 KiB blocks and 255-byte names. */
  statfs?(node: NodeId, ctx: RequestContext): MaybePromise<StatFs>;
  /** Value of extended attribute `name`; null/undefined means ENODATA. */
  getxattr?(
    node: NodeId,
    name: string,
    ctx: RequestContext,
  ): MaybePromise<Uint8Array | string | null | undefined>;
  /** Names of the extended attributes of `node`; default: none. */
  listxattr?(node: NodeId, ctx: RequestContext): MaybePromise<readonly string[]>;
  /** access(2) check beyond mode bits; default: allowed. */
  access?(node: NodeId, mask: number, ctx: RequestContext): MaybePromise<void>;
  /**
   * SEEK_DATA / SEEK_HOLE from `offset`; default: the whole file is data (ENXIO past the end).
   */
  lseek?(
    node: NodeId,
    fh: number,
    offset: number,
    whence: "data" | "hole",
    ctx: RequestContext,
  ): MaybePromise<number>;
  /**
   * The kernel dropped its last reference to `node` (every lookup and READDIRPLUS entry that
   * returned it has been forgotten): the filesystem may release it. Never called for the root.
   */
  forget?(node: NodeId): void;
  /** The session ended (unmounted from here or from outside). */
  destroy?(): void;
}

/** How `mount` sets up one FUSE mount. */
export interface MountOptions {
  /** Filesystem type shown as `fuse.<subtype>` (default `stargz`). */
  subtype?: string;
  /** The mount source shown in mountinfo (default: the subtype). */
  source?: string;
  /** How long the kernel may cache names, in seconds (default 3600: layers are immutable). */
  entryTimeout?: number;
  /** How long the kernel may cache attributes, in seconds (default 3600). */
  attrTimeout?: number;
  /** How long the kernel may cache "no such name", in seconds (default: entryTimeout; 0 = off). */
  negativeTimeout?: number;
  /** Keep the page cache of a file across opens (default true: contents never change). */
  keepCache?: boolean;
  /**
   * Let the kernel cache directory listings (FOPEN_CACHE_DIR). Default: only when both timeouts
   * are at least 60 s (a replayed listing refreshes no entries, so short timeouts turn it into a
   * LOOKUP per name).
   */
  cacheDir?: boolean;
  /**
   * READDIRPLUS use: "always" (default), "auto" or "off". With "auto" the kernel sends plain
   * READDIR after the first reply of a listing, whose entries then each cost a LOOKUP when the
   * walk stats them (about 800 extra requests per `find -ls` of a 1000-entry directory).
   */
  readdirPlus?: "always" | "auto" | "off";
  /** Largest READ in bytes, a multiple of 4 KiB (default 1 MiB). */
  maxRead?: number;
  /** Kernel readahead for the mount in bytes (default 1 MiB; applied through sysfs). */
  maxReadahead?: number;
  /**
   * Device readers where reads block a thread (Deno; Bun reads through its poller). Default 1:
   * each reader issues its next read before decoding the request it got, and requests are
   * answered asynchronously, so more readers only add thread hand-offs (2 and 4 gave no gain in
   * the random 4 KiB benchmark).
   */
  outstandingReads?: number;
  /** Log every request and its answer at debug level. */
  debug?: boolean;
  /** Where the session logs (default: the root logger with `mountpoint`). */
  logger?: Logger;
}
