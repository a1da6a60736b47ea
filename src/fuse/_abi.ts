/**
 * Numbers and sizes of the Linux FUSE kernel ABI (`linux/fuse.h`) that this server speaks.
 * Everything is little-endian on the platforms we build for (x86_64, arm64).
 */

/** The protocol major version we speak; the kernel retries INIT with ours when it is newer. */
export const KERNEL_VERSION = 7;
/** The newest minor version whose struct layouts we write (INIT replies min(kernel, this)). */
export const KERNEL_MINOR_VERSION = 38;
/** Oldest minor we accept: from 7.12 on the kernel takes the full-size structs we write. */
export const MIN_KERNEL_MINOR = 12;

/** Request opcodes (`enum fuse_opcode`). */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

/** INIT flags (`fuse_init_in.flags` / `fuse_init_out.flags`, low 32 bits). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  EXPLICIT_INVAL_DATA: 1 << 25,
} as const;

/** Flags of an OPEN/OPENDIR reply (`fuse_open_out.open_flags`). */
export const OpenFlag = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  CACHE_DIR: 1 << 3,
} as const;

/** `struct fuse_in_header` size. */
export const IN_HEADER_SIZE = 40;
/** `struct fuse_out_header` size. */
export const OUT_HEADER_SIZE = 16;
/** `struct fuse_attr` size. */
export const ATTR_SIZE = 88;
/** `struct fuse_entry_out` size. */
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
/** `struct fuse_attr_out` size. */
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
/** `struct fuse_init_out` size (7.23 and later). */
export const INIT_OUT_SIZE = 64;
/** The part of `struct fuse_init_out` a version negotiation answers with (major, minor). */
export const INIT_VERSION_OUT_SIZE = 8;
/** `struct fuse_getxattr_out` size (the value's length, when asked for the size only). */
export const GETXATTR_OUT_SIZE = 8;
/** `struct fuse_lseek_out` size. */
export const LSEEK_OUT_SIZE = 8;
/** `struct fuse_open_out` size. */
export const OPEN_OUT_SIZE = 16;
/** `struct fuse_statfs_out` size. */
export const STATFS_OUT_SIZE = 80;
/** `struct fuse_dirent` without its name. */
export const DIRENT_SIZE = 24;
/** `struct fuse_direntplus` without its name. */
export const DIRENTPLUS_SIZE = ENTRY_OUT_SIZE + DIRENT_SIZE;
/** The kernel refuses device reads with buffers smaller than this. */
export const MIN_READ_BUFFER = 8192;
/** `sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in)`, added to max_write by the kernel. */
export const WRITE_REQUEST_OVERHEAD = IN_HEADER_SIZE + 40;

/** lseek whence values the kernel forwards (the others it answers itself). */
export const SEEK_DATA = 3;
/** See {@link SEEK_DATA}. */
export const SEEK_HOLE = 4;
