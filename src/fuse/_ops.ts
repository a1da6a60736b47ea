/**
 * The opcode table: for every opcode we answer, its name, the size of its fixed input struct and
 * its handler. Adding an operation is adding a row. Handlers decode their input synchronously
 * (the device buffer is reused by the next read) and answer through the session.
 */
import {
  ATTR_OUT_SIZE,
  DIRENT_SIZE,
  DIRENTPLUS_SIZE,
  ENTRY_OUT_SIZE,
  GETXATTR_OUT_SIZE,
  INIT_OUT_SIZE,
  INIT_VERSION_OUT_SIZE,
  InitFlag,
  KERNEL_MINOR_VERSION,
  KERNEL_VERSION,
  LSEEK_OUT_SIZE,
  MIN_KERNEL_MINOR,
  Op,
  OPEN_OUT_SIZE,
  OpenFlag,
  OUT_HEADER_SIZE,
  SEEK_DATA,
  SEEK_HOLE,
  STATFS_OUT_SIZE,
} from "./_abi.ts";
import {
  ARGS,
  getU64,
  getUnique,
  PAYLOAD,
  readInitIn,
  setU64,
  timeout,
  writeAttrOut,
  writeDirent,
  writeEntryOut,
  writeInitOut,
  writeOpenOut,
  writeOutHeader,
  writeStatfsOut,
} from "./_codec.ts";
import { Errno, FuseError } from "./errno.ts";
import type { FuseRequest, FuseSession, Slab } from "./session.ts";
import type { Attr, DirectorySink, Entry, OpenResult, StatFs } from "./types.ts";

/** One row of the table. `len` is where the request's arguments end (extensions excluded). */
export interface OpRow {
  name: string;
  inSize: number;
  handle(s: FuseSession, req: FuseRequest, inBuf: Slab, len: number): void;
}

const O_ACCMODE = 3;
const ZERO: { sec: number; nsec: number } = timeout(0);

/** A NUL-terminated string argument from `start` up to the end of the request. */
function cString(inBuf: Slab, start: number, end: number): string {
  const nul = inBuf.buf.indexOf(0, start);
  return inBuf.buf.toString("utf8", start, nul >= 0 && nul < end ? nul : end);
}

function replyEntry(s: FuseSession, req: FuseRequest, e: Entry | null | undefined): void {
  const v = s.out.view;
  const c = s.config;
  if (!e) {
    if (c.negativeValid.sec === 0 && c.negativeValid.nsec === 0) {
      return s.replyError(req, Errno.ENOENT);
    }
    // Node 0 is a negative entry the kernel may cache for entry_valid.
    writeEntryOut(v, PAYLOAD, 0, 0, c.negativeValid, ZERO, undefined);
    s.replyOut(req, ENTRY_OUT_SIZE);
    return;
  }
  writeEntryOut(v, PAYLOAD, e.node, e.generation ?? 0, c.entryValid, c.attrValid, e.attr);
  // The kernel counts the reference only if the reply reached it.
  if (s.replyOut(req, ENTRY_OUT_SIZE)) s.ref(e.node);
}

function replyAttr(s: FuseSession, req: FuseRequest, a: Attr): void {
  writeAttrOut(s.out.view, PAYLOAD, req.nodeid, s.config.attrValid, a);
  s.replyOut(req, ATTR_OUT_SIZE);
}

function replyOpen(
  s: FuseSession,
  req: FuseRequest,
  r: OpenResult | undefined,
  dir: boolean,
): void {
  let flags = 0;
  if (r?.keepCache ?? s.config.keepCache) flags |= OpenFlag.KEEP_CACHE;
  if (dir && s.config.cacheDir) flags |= OpenFlag.CACHE_DIR;
  if (r?.directIo) flags |= OpenFlag.DIRECT_IO;
  writeOpenOut(s.out.view, PAYLOAD, r?.fh ?? 0, flags);
  s.replyOut(req, OPEN_OUT_SIZE);
}

function replyEmpty(s: FuseSession, req: FuseRequest): void {
  s.replyOut(req, 0);
}

function replyBytes(s: FuseSession, req: FuseRequest, bytes: Uint8Array): void {
  if (bytes.length > s.out.buf.length - PAYLOAD) return s.replyError(req, Errno.E2BIG);
  s.out.buf.set(bytes, PAYLOAD);
  s.replyOut(req, bytes.length);
}

/** The getxattr/listxattr size protocol: size 0 asks for the length, too small is ERANGE. */
function replySized(s: FuseSession, req: FuseRequest, size: number, bytes: Uint8Array): void {
  if (size === 0) {
    s.out.view.setUint32(PAYLOAD, bytes.length, true);
    s.out.view.setUint32(PAYLOAD + 4, 0, true);
    s.replyOut(req, GETXATTR_OUT_SIZE);
  } else if (size < bytes.length) {
    s.replyError(req, Errno.ERANGE);
  } else {
    replyBytes(s, req, bytes);
  }
}

const encoder = new TextEncoder();

function toBytes(v: Uint8Array | string): Uint8Array {
  return typeof v === "string" ? encoder.encode(v) : v;
}

/** Fills one READDIR/READDIRPLUS reply buffer. */
class DirReply implements DirectorySink {
  pos = PAYLOAD;
  /** Nodes handed out in READDIRPLUS entries: referenced once the reply is delivered. */
  readonly added: number[] = [];
  constructor(
    private readonly s: FuseSession,
    readonly slab: Slab,
    private readonly limit: number,
    private readonly plus: boolean,
  ) {}

  add(name: string, next: number, entry: Entry): boolean {
    const nameLen = Buffer.byteLength(name);
    const rec = ((this.plus ? DIRENTPLUS_SIZE : DIRENT_SIZE) + nameLen + 7) & ~7;
    if (this.pos + rec > this.limit) return false;
    const v = this.slab.view;
    let off = this.pos;
    if (this.plus) {
      if (name === "." || name === "..") {
        // The kernel takes no reference on dot entries; node 0 says "no attributes here".
        writeEntryOut(v, off, 0, 0, ZERO, ZERO, undefined);
      } else {
        const c = this.s.config;
        writeEntryOut(
          v,
          off,
          entry.node,
          entry.generation ?? 0,
          c.entryValid,
          c.attrValid,
          entry.attr,
        );
        this.added.push(entry.node);
      }
      off += ENTRY_OUT_SIZE;
    }
    writeDirent(v, off, entry.node, next, nameLen, entry.attr.mode);
    off += DIRENT_SIZE;
    this.slab.buf.write(name, off, nameLen, "utf8");
    this.slab.buf.fill(0, off + nameLen, this.pos + rec);
    this.pos += rec;
    return true;
  }
}

function readdir(s: FuseSession, req: FuseRequest, inBuf: Slab, plus: boolean): void {
  const v = inBuf.view;
  const fh = getU64(v, ARGS + 0);
  const cookie = getU64(v, ARGS + 8);
  const size = Math.min(v.getUint32(ARGS + 16, true), s.smallPool.size - OUT_HEADER_SIZE);
  const slab = s.smallPool.take();
  const out = new DirReply(s, slab, PAYLOAD + size, plus);
  const finish = (): void => {
    if (req.done) return;
    writeOutHeader(slab.view, out.pos, 0, req.unique);
    if (s.send(req, slab, out.pos)) { for (const node of out.added) s.ref(node); }
  };
  let r: void | Promise<void>;
  try {
    r = s.fs.readdir(req.nodeid, fh, cookie, out, req);
  } catch (err) {
    s.smallPool.give(slab);
    throw err;
  }
  if (!(r instanceof Promise)) {
    finish();
    s.smallPool.give(slab);
    return;
  }
  s.track(
    req,
    r.then(finish, (err) => {
      if (!req.done) s.fail(req, err);
    }).finally(() => s.smallPool.give(slab)),
  );
}

function read(s: FuseSession, req: FuseRequest, inBuf: Slab): void {
  const v = inBuf.view;
  const fh = getU64(v, ARGS + 0);
  const offset = getU64(v, ARGS + 8);
  const size = Math.min(v.getUint32(ARGS + 16, true), s.config.maxRead);
  const pool = size <= s.smallPool.size - OUT_HEADER_SIZE ? s.smallPool : s.largePool;
  const slab = pool.take();
  const finish = (n: number): void => {
    if (req.done) return;
    if (!(n >= 0 && n <= size)) throw new FuseError(Errno.EIO, `read returned ${n} of ${size}`);
    writeOutHeader(slab.view, OUT_HEADER_SIZE + n, 0, req.unique);
    s.send(req, slab, OUT_HEADER_SIZE + n);
  };
  let r: number | Promise<number>;
  try {
    r = s.fs.read(req.nodeid, fh, offset, slab.buf.subarray(PAYLOAD, PAYLOAD + size), req);
  } catch (err) {
    pool.give(slab);
    throw err;
  }
  if (!(r instanceof Promise)) {
    try {
      finish(r);
    } finally {
      pool.give(slab);
    }
    return;
  }
  // The buffer goes back to the pool only when the filesystem is done writing into it, even if
  // the request was answered earlier (interrupt, unmount).
  s.track(
    req,
    r.then(finish).catch((err) => {
      if (!req.done) s.fail(req, err);
    }).finally(() => pool.give(slab)),
  );
}

function init(s: FuseSession, req: FuseRequest, inBuf: Slab): void {
  const k = readInitIn(inBuf.view, ARGS);
  const v = s.out.view;
  if (k.major > KERNEL_VERSION) {
    // A newer kernel asks again with our major when we answer with it.
    writeInitOut(v, PAYLOAD, {
      major: KERNEL_VERSION,
      minor: KERNEL_MINOR_VERSION,
      maxReadahead: 0,
      flags: 0,
      maxBackground: 0,
      congestionThreshold: 0,
      maxWrite: 0,
      timeGran: 0,
      maxPages: 0,
    });
    s.replyOut(req, INIT_VERSION_OUT_SIZE);
    return;
  }
  if (k.major < KERNEL_VERSION || k.minor < MIN_KERNEL_MINOR) {
    s.replyError(req, Errno.EPROTO);
    s.initFailed(
      new FuseError(
        Errno.EPROTO,
        `kernel FUSE protocol ${k.major}.${k.minor} is not supported ` +
          `(need ${KERNEL_VERSION}.${MIN_KERNEL_MINOR} or newer)`,
      ),
    );
    return;
  }
  const c = s.config;
  let want = InitFlag.ASYNC_READ | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES |
    InitFlag.CACHE_SYMLINKS | InitFlag.EXPLICIT_INVAL_DATA | InitFlag.BIG_WRITES;
  if (c.readdirPlus !== "off") want |= InitFlag.DO_READDIRPLUS;
  if (c.readdirPlus === "auto") want |= InitFlag.READDIRPLUS_AUTO;
  const flags = k.flags & want;
  const minor = Math.min(k.minor, KERNEL_MINOR_VERSION);
  writeInitOut(v, PAYLOAD, {
    major: KERNEL_VERSION,
    minor,
    maxReadahead: Math.min(k.maxReadahead, c.maxReadahead),
    flags,
    // Many reads in flight: a lazy layer answers from the network, so queueing them up is good.
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: c.maxWrite,
    timeGran: 1,
    maxPages: c.maxRead / 4096,
  });
  s.replyOut(req, INIT_OUT_SIZE);
  s.initialized(`${KERNEL_VERSION}.${minor}`);
}

const defaultStatfs: StatFs = {
  blocks: 0,
  bfree: 0,
  bavail: 0,
  files: 0,
  ffree: 0,
  bsize: 4096,
  namelen: 255,
  frsize: 4096,
};

function erofs(name: string): OpRow {
  return {
    name,
    inSize: 0,
    handle(s, req) {
      s.replyError(req, Errno.EROFS);
    },
  };
}

const rows: Record<number, OpRow> = {
  [Op.INIT]: { name: "INIT", inSize: 16, handle: init },
  [Op.DESTROY]: {
    name: "DESTROY",
    inSize: 0,
    handle(s, req) {
      s.replyOut(req, 0);
      s.destroyed();
    },
  },
  [Op.LOOKUP]: {
    name: "LOOKUP",
    inSize: 1,
    handle(s, req, inBuf, len) {
      const name = cString(inBuf, ARGS, len);
      s.settle(req, s.fs.lookup(req.nodeid, name, req), replyEntry);
    },
  },
  [Op.FORGET]: {
    name: "FORGET",
    inSize: 8,
    handle(s, req, inBuf) {
      req.done = true; // FORGET has no reply
      s.forget(req.nodeid, getU64(inBuf.view, ARGS));
    },
  },
  [Op.BATCH_FORGET]: {
    name: "BATCH_FORGET",
    inSize: 8,
    handle(s, req, inBuf, len) {
      req.done = true;
      const v = inBuf.view;
      const count = v.getUint32(ARGS, true);
      for (let i = 0, off = ARGS + 8; i < count && off + 16 <= len; i++, off += 16) {
        s.forget(getU64(v, off), getU64(v, off + 8));
      }
    },
  },
  [Op.GETATTR]: {
    name: "GETATTR",
    inSize: 16,
    handle(s, req) {
      s.settle(req, s.fs.getattr(req.nodeid, req), replyAttr);
    },
  },
  [Op.READLINK]: {
    name: "READLINK",
    inSize: 0,
    handle(s, req) {
      if (!s.fs.readlink) return s.replyError(req, Errno.EINVAL);
      s.settle(req, s.fs.readlink(req.nodeid, req), (s, req, t) => replyBytes(s, req, toBytes(t)));
    },
  },
  [Op.OPEN]: {
    name: "OPEN",
    inSize: 8,
    handle(s, req, inBuf) {
      const flags = inBuf.view.getUint32(ARGS, true);
      if ((flags & O_ACCMODE) !== 0) return s.replyError(req, Errno.EROFS);
      if (!s.fs.open) return replyOpen(s, req, undefined, false);
      s.settle(req, s.fs.open(req.nodeid, flags, req), (s, req, r) => replyOpen(s, req, r, false));
    },
  },
  [Op.READ]: { name: "READ", inSize: 24, handle: read },
  [Op.RELEASE]: {
    name: "RELEASE",
    inSize: 16,
    handle(s, req, inBuf) {
      const fh = getU64(inBuf.view, ARGS);
      s.settle(req, s.fs.release?.(req.nodeid, fh), replyEmpty);
    },
  },
  [Op.OPENDIR]: {
    name: "OPENDIR",
    inSize: 8,
    handle(s, req, inBuf) {
      const flags = inBuf.view.getUint32(ARGS, true);
      if (!s.fs.opendir) return replyOpen(s, req, undefined, true);
      s.settle(
        req,
        s.fs.opendir(req.nodeid, flags, req),
        (s, req, r) => replyOpen(s, req, r, true),
      );
    },
  },
  [Op.READDIR]: {
    name: "READDIR",
    inSize: 24,
    handle(s, req, inBuf) {
      readdir(s, req, inBuf, false);
    },
  },
  [Op.READDIRPLUS]: {
    name: "READDIRPLUS",
    inSize: 24,
    handle(s, req, inBuf) {
      readdir(s, req, inBuf, true);
    },
  },
  [Op.RELEASEDIR]: {
    name: "RELEASEDIR",
    inSize: 16,
    handle(s, req, inBuf) {
      const fh = getU64(inBuf.view, ARGS);
      s.settle(req, s.fs.releasedir?.(req.nodeid, fh), replyEmpty);
    },
  },
  [Op.STATFS]: {
    name: "STATFS",
    inSize: 0,
    handle(s, req) {
      const r = s.fs.statfs ? s.fs.statfs(req.nodeid, req) : defaultStatfs;
      s.settle(req, r, (s, req, st) => {
        writeStatfsOut(s.out.view, PAYLOAD, st);
        s.replyOut(req, STATFS_OUT_SIZE);
      });
    },
  },
  [Op.GETXATTR]: {
    name: "GETXATTR",
    inSize: 8,
    handle(s, req, inBuf, len) {
      const size = inBuf.view.getUint32(ARGS, true);
      const name = cString(inBuf, ARGS + 8, len);
      if (!s.fs.getxattr) return s.replyError(req, Errno.ENODATA);
      s.settle(req, s.fs.getxattr(req.nodeid, name, req), (s, req, value) => {
        if (value === null || value === undefined) return s.replyError(req, Errno.ENODATA);
        replySized(s, req, size, toBytes(value));
      });
    },
  },
  [Op.LISTXATTR]: {
    name: "LISTXATTR",
    inSize: 8,
    handle(s, req, inBuf) {
      const size = inBuf.view.getUint32(ARGS, true);
      const names = s.fs.listxattr ? s.fs.listxattr(req.nodeid, req) : [];
      s.settle(req, names, (s, req, list) => {
        replySized(s, req, size, encoder.encode(list.map((n) => n + "\0").join("")));
      });
    },
  },
  [Op.ACCESS]: {
    name: "ACCESS",
    inSize: 8,
    handle(s, req, inBuf) {
      const mask = inBuf.view.getUint32(ARGS, true);
      // W_OK on a read-only mount.
      if (mask & 2) return s.replyError(req, Errno.EROFS);
      s.settle(req, s.fs.access?.(req.nodeid, mask, req), replyEmpty);
    },
  },
  [Op.FLUSH]: {
    name: "FLUSH",
    inSize: 24,
    handle(s, req) {
      s.replyOut(req, 0);
    },
  },
  [Op.INTERRUPT]: {
    name: "INTERRUPT",
    inSize: 8,
    handle(s, req, inBuf) {
      req.done = true; // answered through the interrupted request
      s.interrupt(getUnique(inBuf.view, ARGS));
    },
  },
  [Op.NOTIFY_REPLY]: {
    name: "NOTIFY_REPLY",
    inSize: 0,
    handle(_s, req) {
      req.done = true; // we never send notifications that expect one
    },
  },
  [Op.LSEEK]: {
    name: "LSEEK",
    inSize: 16,
    handle(s, req, inBuf) {
      const v = inBuf.view;
      const fh = getU64(v, ARGS);
      const offset = getU64(v, ARGS + 8);
      const w = v.getUint32(ARGS + 16, true);
      if (w !== SEEK_DATA && w !== SEEK_HOLE) return s.replyError(req, Errno.EINVAL);
      const whence = w === SEEK_DATA ? "data" : "hole";
      const reply = (s: FuseSession, req: FuseRequest, pos: number): void => {
        setU64(s.out.view, PAYLOAD, pos);
        s.replyOut(req, LSEEK_OUT_SIZE);
      };
      if (s.fs.lseek) {
        return s.settle(req, s.fs.lseek(req.nodeid, fh, offset, whence, req), reply);
      }
      s.settle(req, s.fs.getattr(req.nodeid, req), (s, req, a) => {
        if (offset >= a.size) return s.replyError(req, Errno.ENXIO);
        reply(s, req, whence === "data" ? offset : a.size);
      });
    },
  },
  [Op.SETATTR]: erofs("SETATTR"),
  [Op.SYMLINK]: erofs("SYMLINK"),
  [Op.MKNOD]: erofs("MKNOD"),
  [Op.MKDIR]: erofs("MKDIR"),
  [Op.UNLINK]: erofs("UNLINK"),
  [Op.RMDIR]: erofs("RMDIR"),
  [Op.RENAME]: erofs("RENAME"),
  [Op.LINK]: erofs("LINK"),
  [Op.WRITE]: erofs("WRITE"),
  [Op.SETXATTR]: erofs("SETXATTR"),
  [Op.REMOVEXATTR]: erofs("REMOVEXATTR"),
  [Op.CREATE]: erofs("CREATE"),
  [Op.FALLOCATE]: erofs("FALLOCATE"),
  [Op.RENAME2]: erofs("RENAME2"),
  [Op.COPY_FILE_RANGE]: erofs("COPY_FILE_RANGE"),
  [Op.TMPFILE]: erofs("TMPFILE"),
};

/**
 * Opcode → row. Opcodes without a row (FSYNC, POLL, IOCTL, locks, BMAP, STATX, …) get ENOSYS,
 * after which the kernel stops sending them or falls back to what it can do itself.
 */
export const OPS: readonly (OpRow | undefined)[] = (() => {
  const table: (OpRow | undefined)[] = [];
  for (const [op, row] of Object.entries(rows)) table[Number(op)] = row;
  return table;
})();
