/**
 * One FUSE mount: the /dev/fuse connection, the request loop, replies, lookup counts and
 * unmounting. Requests are decoded and answered by the opcode table in `_ops.ts`.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { log as rootLog, Logger } from "../log/mod.ts";
import { METRICS } from "../metrics/mod.ts";
import { hasPollingReader, pollingReader, setNonBlocking } from "../runtime/mod.ts";
import {
  IN_HEADER_SIZE,
  MIN_READ_BUFFER,
  OUT_HEADER_SIZE,
  WRITE_REQUEST_OVERHEAD,
} from "./_abi.ts";
import { type InHeader, readInHeader, type Timeout, timeout, writeOutHeader } from "./_codec.ts";
import {
  abortConnection,
  abortConnectionSync,
  findMount,
  listMounts,
  run,
  setReadahead,
  sleep,
} from "./_mount.ts";
import { OPS } from "./_ops.ts";
import { Errno, errnoName, errnoOf, FuseError } from "./errno.ts";
import {
  type FileSystem,
  type MaybePromise,
  type MountOptions,
  type NodeId,
  type RequestContext,
  ROOT_ID,
} from "./types.ts";

/**
 * max_write: a read-only mount never gets writes, but the kernel refuses device reads smaller than
 * max(8 KiB, 80 + max_write), so the smallest value (4 KiB) keeps every read buffer small.
 */
const MAX_WRITE = 4096;
/**
 * Timeouts (seconds) from which directory listings are cached by default. A cached listing
 * (FOPEN_CACHE_DIR) is replayed without READDIRPLUS, so nothing refreshes its entries: once they
 * expired, every name listed costs a LOOKUP (100k LOOKUPs on a second `find -ls` over 100k
 * entries with 1 s timeouts, against 4 requests per directory when READDIRPLUS refreshes them).
 * With long timeouts the entries are still valid when the listing is replayed, and the cache
 * saves the READDIRPLUS requests (2.0k instead of 4.0k requests for the same walk).
 */
const LONG_TIMEOUT = 60;
/** Reply buffers up to this size come from the small pool (most replies and 4 KiB reads). */
const SMALL_REPLY = 64 * 1024;

/** A reusable byte buffer with its DataView. */
export interface Slab {
  buf: Buffer;
  view: DataView;
}

function slab(size: number): Slab {
  const buf = Buffer.allocUnsafe(size);
  return { buf, view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength) };
}

class SlabPool {
  #free: Slab[] = [];
  constructor(readonly size: number, private readonly keep: number) {}
  take(): Slab {
    return this.#free.pop() ?? slab(this.size);
  }
  give(s: Slab): void {
    if (this.#free.length < this.keep) this.#free.push(s);
  }
}

/** One request being served: the context a filesystem sees, plus what the reply needs. */
export class FuseRequest implements RequestContext {
  /** True once answered (or given up at unmount): later answers are dropped. */
  done = false;
  #abort?: AbortController;
  constructor(
    readonly opcode: number,
    readonly unique: number,
    readonly nodeid: number,
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
  ) {}

  get signal(): AbortSignal {
    return (this.#abort ??= new AbortController()).signal;
  }

  /** Fires the signal (FUSE_INTERRUPT, unmount). */
  abort(): void {
    (this.#abort ??= new AbortController()).abort();
  }
}

/** Resolved per-mount settings. */
export interface SessionConfig {
  entryValid: Timeout;
  attrValid: Timeout;
  negativeValid: Timeout;
  keepCache: boolean;
  cacheDir: boolean;
  readdirPlus: "always" | "auto" | "off";
  maxRead: number;
  maxReadahead: number;
  maxWrite: number;
  debug: boolean;
}

/**
 * What a successor process needs, besides the /dev/fuse descriptor, to serve a live connection
 * without INIT (the kernel negotiates only once per connection): persisted with the mount.
 */
export interface SessionState {
  /** `major:minor` of the mount, to tell that the mount still is this connection. */
  dev: string;
  /** The negotiated protocol, e.g. `7.38`. */
  protocol: string;
  /** The largest READ negotiated (`max_pages`): reply buffers must hold it. */
  maxRead: number;
}

/**
 * FUSE_NOTIFY_RESEND (`enum fuse_notify_code`: POLL 1 … DELETE 6, RESEND 7, INC_EPOCH 8,
 * PRUNE 9; protocol 7.40, Linux 6.9).
 */
const NOTIFY_RESEND = 7;

/** A mounted filesystem. Unmount it with {@link FuseSession.unmount}. */
export class FuseSession {
  /** Resolves when the kernel ended the session (unmounted from here or from outside). */
  readonly closed: Promise<void>;
  /** The negotiated protocol version, e.g. `7.38`. */
  protocol = "";

  /** @internal */ readonly config: SessionConfig;
  /** @internal */ readonly log: Logger;
  /** @internal */ readonly out: Slab;
  /** @internal */ readonly smallPool: SlabPool;
  /** @internal */ readonly largePool: SlabPool;

  #resolveClosed!: () => void;
  #inflight = new Map<number, FuseRequest>();
  #refs = new Map<NodeId, number>();
  #readers = 0;
  #ended = false;
  #unmounting?: Promise<void>;
  #header: InHeader = {
    len: 0,
    opcode: 0,
    unique: 0,
    nodeid: 0,
    uid: 0,
    gid: 0,
    pid: 0,
    extLen: 0,
  };
  #ready: { resolve: () => void; reject: (e: Error) => void } | undefined;

  /** @internal Use {@link mount}. */
  constructor(
    readonly fs: FileSystem,
    readonly mountpoint: string,
    /** `major:minor` of the mount; the minor names the FUSE connection. */
    readonly dev: string,
    private readonly fd: number,
    opts: MountOptions,
    adopted?: SessionState,
  ) {
    const entry = opts.entryTimeout ?? 3600;
    const attr = opts.attrTimeout ?? 3600;
    const maxRead = adopted?.maxRead ??
      Math.max(4096, Math.floor((opts.maxRead ?? 1 << 20) / 4096) * 4096);
    this.config = {
      entryValid: timeout(entry),
      attrValid: timeout(attr),
      negativeValid: timeout(opts.negativeTimeout ?? entry),
      keepCache: opts.keepCache ?? true,
      cacheDir: opts.cacheDir ?? (entry >= LONG_TIMEOUT && attr >= LONG_TIMEOUT),
      readdirPlus: opts.readdirPlus ?? "always",
      maxRead,
      maxReadahead: opts.maxReadahead ?? 1 << 20,
      maxWrite: MAX_WRITE,
      debug: opts.debug ?? false,
    };
    this.log = opts.logger ?? rootLog.with({ mountpoint });
    this.out = slab(SMALL_REPLY + OUT_HEADER_SIZE);
    this.smallPool = new SlabPool(SMALL_REPLY + OUT_HEADER_SIZE, 64);
    this.largePool = new SlabPool(maxRead + OUT_HEADER_SIZE, 16);
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    live.add(this);
    this.closed.then(() => live.delete(this));
  }

  /** The /dev/fuse descriptor, for keeping a copy outside this process (see `fdstore`). */
  get deviceFd(): number {
    return this.fd;
  }

  /** What {@link adopt} needs to serve this connection from another process. */
  state(): SessionState {
    return { dev: this.dev, protocol: this.protocol, maxRead: this.config.maxRead };
  }

  /**
   * Hands the connection over to a successor process: it is no longer torn down when this
   * process exits, and this resolves once the requests being answered were answered (at most
   * `graceMs`). Requests read after that are still answered until the process exits; the
   * kernel resends whatever is left unanswered to the successor (see {@link adopt}).
   */
  async detach(graceMs = 2000): Promise<void> {
    live.delete(this);
    const deadline = Date.now() + graceMs;
    while (this.#inflight.size > 0 && Date.now() < deadline) await sleep(10);
  }

  /** True once the session has ended. */
  get ended(): boolean {
    return this.#ended;
  }

  /** How many nodes the kernel currently holds references to (excluding the root). */
  get referencedNodes(): number {
    return this.#refs.size;
  }

  /** @internal Starts serving; resolves after INIT was answered. */
  start(outstanding: number): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => (this.#ready = { resolve, reject }));
    if (hasPollingReader()) this.#pump(pollingReader(this.fd));
    else for (let i = 0; i < outstanding; i++) this.#blockingReader();
    return ready;
  }

  /** @internal Asks the kernel to queue again the requests read but not answered. */
  resend(): void {
    const b = Buffer.alloc(OUT_HEADER_SIZE);
    writeOutHeader(
      new DataView(b.buffer, b.byteOffset, b.length),
      OUT_HEADER_SIZE,
      NOTIFY_RESEND,
      0,
    );
    try {
      fs.writeSync(this.fd, b, 0, b.length);
    } catch (err) {
      this.log.warn(
        "the kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9): requests the " +
          "previous process read but did not answer stay unanswered",
        { error: err },
      );
    }
  }

  /** @internal Called by INIT. */
  initialized(protocol: string): void {
    this.protocol = protocol;
    this.#ready?.resolve();
    this.#ready = undefined;
  }

  /** @internal Called by INIT when we cannot speak the kernel's protocol. */
  initFailed(err: Error): void {
    this.#ready?.reject(err);
    this.#ready = undefined;
  }

  // Device reads that block a thread each (Deno, Node). Each reader alternates between two
  // buffers: the next read is issued before the request just read is decoded, so a read is
  // waiting in the kernel nearly all the time.
  #blockingReader(): void {
    const size = Math.max(MIN_READ_BUFFER, WRITE_REQUEST_OVERHEAD + MAX_WRITE) + 4096;
    const bufs = [slab(size), slab(size)];
    let turn = 0;
    this.#readers++;
    const next = (): void => {
      const inBuf = bufs[turn];
      turn ^= 1;
      fs.read(this.fd, inBuf.buf, 0, inBuf.buf.length, null, (err, n) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // EINTR: a signal; ENOENT: the kernel dropped an interrupted request as we read it.
          if (!this.#ended && (code === "EINTR" || code === "EAGAIN" || code === "ENOENT")) {
            return next();
          }
          return this.#readerDone(code === "ENODEV" ? undefined : err);
        }
        if (this.#ended) return this.#readerDone();
        next();
        this.#dispatch(inBuf, n);
      });
    };
    next();
  }

  // Device reads driven by the runtime's poller (Bun): one stream, each chunk is what one read()
  // returned (we still split by header length in case chunks were ever joined).
  async #pump(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    const inBuf = slab(Math.max(MIN_READ_BUFFER, WRITE_REQUEST_OVERHEAD + MAX_WRITE) + 4096);
    this.#readers++;
    for (;;) {
      let chunk: Uint8Array;
      try {
        const r = await reader.read();
        if (r.done) return this.#readerDone();
        chunk = r.value;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // EINVAL: Bun reads into what is left of its 256 KiB buffer while we are busy, and the
        // kernel refuses reads smaller than 8 KiB without dequeuing anything; what Bun had
        // read was delivered, so a fresh stream (fresh buffer) loses nothing.
        if (!this.#ended && (code === "EINVAL" || code === "EINTR" || code === "ENOENT")) {
          reader = pollingReader(this.fd);
          continue;
        }
        return this.#readerDone(code === "ENODEV" || code === "EBADF" ? undefined : err);
      }
      if (this.#ended) return this.#readerDone();
      let pos = 0;
      while (pos + IN_HEADER_SIZE <= chunk.length) {
        const len = chunk[pos] | (chunk[pos + 1] << 8) | (chunk[pos + 2] << 16) |
          (chunk[pos + 3] << 24);
        if (len < IN_HEADER_SIZE || pos + len > chunk.length) {
          this.log.error("malformed FUSE request", { len, chunk: chunk.length });
          break;
        }
        // Requests can outgrow the buffer (a BATCH_FORGET fills whatever the read offered).
        const into = len <= inBuf.buf.length ? inBuf : slab(len);
        into.buf.set(pos === 0 && len === chunk.length ? chunk : chunk.subarray(pos, pos + len));
        this.#dispatch(into, len);
        pos += len;
      }
    }
  }

  #readerDone(err?: unknown): void {
    if (err) this.log.error("reading /dev/fuse failed", { error: err });
    if (--this.#readers > 0) {
      // The other readers are blocked in read(); the aborted connection wakes them with ENODEV.
      this.#ended = true;
      return;
    }
    this.#finish();
  }

  #finish(): void {
    this.#ended = true;
    this.initFailed(new Error("FUSE session ended before INIT"));
    for (const req of this.#inflight.values()) {
      req.done = true;
      req.abort();
    }
    this.#inflight.clear();
    fs.close(this.fd, () => {
      try {
        this.fs.destroy?.();
      } catch (err) {
        this.log.warn("filesystem destroy failed", { error: err });
      }
      this.#refs.clear();
      this.log.debug("FUSE session ended");
      this.#resolveClosed();
    });
  }

  #dispatch(inBuf: Slab, n: number): void {
    const h = this.#header;
    readInHeader(inBuf.view, 0, h);
    const req = new FuseRequest(h.opcode, h.unique, h.nodeid, h.uid, h.gid, h.pid);
    if (h.len !== n) {
      this.log.error("FUSE request length mismatch", { len: h.len, read: n, opcode: h.opcode });
      return this.replyError(req, Errno.EIO);
    }
    const op = OPS[h.opcode];
    if (this.config.debug) {
      this.log.debug("fuse request", {
        op: op?.name ?? `opcode ${h.opcode}`,
        unique: h.unique,
        node: h.nodeid,
        len: h.len,
      });
    }
    if (!op) return this.replyError(req, Errno.ENOSYS);
    if (h.len - h.extLen < IN_HEADER_SIZE + op.inSize) {
      return this.replyError(req, Errno.EINVAL);
    }
    try {
      op.handle(this, req, inBuf, h.len - h.extLen);
    } catch (err) {
      this.fail(req, err);
    }
  }

  /**
   * @internal Answers `req` with `done(value)` now, or when the promise settles (tracking the
   * request so that INTERRUPT and unmount can reach it).
   */
  settle<T>(
    req: FuseRequest,
    r: MaybePromise<T>,
    done: (s: FuseSession, req: FuseRequest, v: T) => void,
  ): void {
    if (!(r instanceof Promise)) return done(this, req, r);
    this.#inflight.set(req.unique, req);
    METRICS.fuseInFlight.add();
    r.then((v) => {
      METRICS.fuseInFlight.add({}, -1);
      this.#inflight.delete(req.unique);
      if (req.done) return;
      try {
        done(this, req, v);
      } catch (err) {
        this.fail(req, err);
      }
    }, (err) => {
      METRICS.fuseInFlight.add({}, -1);
      this.#inflight.delete(req.unique);
      if (!req.done) this.fail(req, err);
    });
  }

  /** @internal Marks `req` as in flight until `p` settles (for requests that settle themselves). */
  track(req: FuseRequest, p: Promise<unknown>): void {
    this.#inflight.set(req.unique, req);
    METRICS.fuseInFlight.add();
    p.finally(() => {
      METRICS.fuseInFlight.add({}, -1);
      this.#inflight.delete(req.unique);
    });
  }

  /** @internal FUSE_INTERRUPT for the request `unique`. */
  interrupt(unique: number): void {
    this.#inflight.get(unique)?.abort();
  }

  /** @internal Answers `req` with the errno for `err`. */
  fail(req: FuseRequest, err: unknown): void {
    const [errno, unexpected] = errnoOf(err);
    if (unexpected) {
      this.log.warn("filesystem operation failed", {
        op: OPS[req.opcode]?.name,
        node: req.nodeid,
        error: err,
      });
    }
    this.replyError(req, errno);
  }

  /** @internal Answers `req` with `-errno`. */
  replyError(req: FuseRequest, errno: number): void {
    writeOutHeader(this.out.view, OUT_HEADER_SIZE, -errno, req.unique);
    this.send(req, this.out, OUT_HEADER_SIZE);
  }

  /** @internal Answers `req` with the payload already in `this.out` after the header. */
  replyOut(req: FuseRequest, payloadLen: number): boolean {
    writeOutHeader(this.out.view, OUT_HEADER_SIZE + payloadLen, 0, req.unique);
    return this.send(req, this.out, OUT_HEADER_SIZE + payloadLen);
  }

  /**
   * @internal Writes one reply (header and payload in one write(2), as the kernel requires).
   * The write is synchronous on purpose: a reply to /dev/fuse never blocks (the kernel copies it
   * into the waiting request and wakes the caller), and writing at once lets every reply be built
   * in one shared buffer. Returns false when the kernel no longer wanted it.
   */
  send(req: FuseRequest, s: Slab, len: number): boolean {
    req.done = true;
    if (this.config.debug) {
      const error = s.view.getInt32(4, true);
      this.log.debug("fuse reply", {
        unique: req.unique,
        len,
        ...(error ? { error: errnoName(-error) } : {}),
      });
    }
    try {
      fs.writeSync(this.fd, s.buf, 0, len);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the request was interrupted and is gone; ENODEV/EBADF: the session ended.
      if (code !== "ENOENT" && code !== "ENODEV" && code !== "EBADF") {
        this.log.error("writing a FUSE reply failed", { unique: req.unique, error: err });
      }
      return false;
    }
  }

  /** @internal One more kernel reference on `node` (a LOOKUP or READDIRPLUS entry). */
  ref(node: NodeId): void {
    if (node !== ROOT_ID) this.#refs.set(node, (this.#refs.get(node) ?? 0) + 1);
  }

  /** @internal FORGET: the kernel drops `n` references on `node`. */
  forget(node: NodeId, n: number): void {
    const left = (this.#refs.get(node) ?? 0) - n;
    if (left > 0) return void this.#refs.set(node, left);
    if (!this.#refs.delete(node)) return;
    try {
      this.fs.forget?.(node);
    } catch (err) {
      this.log.warn("filesystem forget failed", { node, error: err });
    }
  }

  /** @internal DESTROY: the kernel is done with us. */
  destroyed(): void {
    this.#ended = true;
  }

  /**
   * Unmounts and waits for the session to end. Busy mounts are retried after failing the
   * requests their users wait on; a lazy unmount plus aborting the connection is the last resort,
   * so this never leaves the mount behind.
   */
  unmount(): Promise<void> {
    this.#unmounting ??= this.#unmount();
    return this.#unmounting;
  }

  async #unmount(): Promise<void> {
    let gone = this.#ended;
    for (let attempt = 0; !gone && attempt < 6; attempt++) {
      const r = await run(["umount", this.mountpoint]);
      if (r.code === 0 || !(await this.#mounted())) {
        gone = true;
        break;
      }
      this.log.debug("umount failed, retrying", { stderr: r.stderr, attempt });
      // Whoever keeps the mount busy may be waiting on us: answer them so they can let go.
      this.#abortInflight();
      await sleep(25 * (attempt + 1));
    }
    if (!gone) {
      this.log.warn("mount stays busy: detaching it lazily and aborting the connection");
      await run(["umount", "-l", this.mountpoint]);
      await abortConnection(this.dev);
    }
    const ended = await Promise.race([this.closed.then(() => true), sleep(2000).then(() => false)]);
    if (!ended) {
      // Unmounted but the kernel keeps the connection (a file still open after a lazy detach).
      await abortConnection(this.dev);
      await this.closed;
    }
  }

  async #mounted(): Promise<boolean> {
    return (await listMounts()).some((m) => m.dev === this.dev && m.fstype.startsWith("fuse"));
  }

  #abortInflight(): void {
    for (const req of [...this.#inflight.values()]) {
      req.abort();
      // EIO, not EINTR: readers such as cat retry a read that failed with EINTR.
      if (!req.done) this.replyError(req, Errno.EIO);
    }
  }
}

/**
 * Serves the live FUSE connection `fd` (a copy of a previous process' /dev/fuse descriptor,
 * mounted at `mountpoint`) without INIT, and asks the kernel to resend what the previous
 * process read but never answered. Node ids and file handles must mean what they meant to the
 * previous process. Kernels before 6.9 cannot resend: those requests stay unanswered (their
 * callers hang until killed), which is logged.
 */
export async function adopt(
  fs: FileSystem,
  mountpoint: string,
  fd: number,
  state: SessionState,
  opts: MountOptions = {},
): Promise<FuseSession> {
  const mp = path.resolve(mountpoint);
  const info = await findMount(mp);
  if (!info || info.dev !== state.dev || !info.fstype.startsWith("fuse")) {
    throw new FuseError(Errno.ENOENT, `${mp} is no longer the FUSE mount ${state.dev}`);
  }
  // The flag belongs to the open file: the previous process may have run on the other runtime.
  setNonBlocking(fd, hasPollingReader());
  installExitHook();
  const session = new FuseSession(fs, mp, state.dev, fd, opts, state);
  session.protocol = state.protocol;
  // No INIT comes; the promise only rejects when the session ends.
  session.start(Math.max(1, opts.outstandingReads ?? 1)).catch(() => {});
  session.resend();
  return session;
}

/** Sessions not yet ended; detached at process exit. */
const live = new Set<FuseSession>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // When the process exits with mounts still up (a crash, process.exit), nobody answers their
  // requests any more: detach them, and abort their connections so that nothing (not even this
  // process closing its own files on them) waits for an answer.
  process.on("exit", () => {
    for (const s of live) {
      spawnSync("umount", ["-l", s.mountpoint], { stdio: "ignore" });
      abortConnectionSync(s.dev);
    }
  });
}

/**
 * Mounts `fs` at `mountpoint` (an existing directory that is not already a mount point) and
 * serves it until unmounted. Resolves once the kernel finished INIT.
 */
export async function mount(
  fs: FileSystem,
  mountpoint: string,
  opts: MountOptions = {},
): Promise<FuseSession> {
  const mp = path.resolve(mountpoint);
  let st: fs.Stats;
  try {
    st = await fsp.stat(mp);
  } catch (err) {
    const [errno] = errnoOf(err);
    throw new FuseError(errno, `mountpoint ${mp}: ${(err as Error).message}`);
  }
  if (!st.isDirectory()) throw new FuseError(Errno.ENOTDIR, `mountpoint ${mp} is not a directory`);
  if (await findMount(mp)) {
    throw new FuseError(Errno.EBUSY, `mountpoint ${mp} is already a mount point`);
  }
  const subtype = opts.subtype ?? "stargz";
  const polling = hasPollingReader();
  const fd = await openDevice(polling);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const options = `fd=3,rootmode=40000,user_id=${uid},group_id=${gid},` +
    "allow_other,default_permissions,ro";
  const r = await run(
    ["mount", "-i", "-t", `fuse.${subtype}`, "-o", options, opts.source ?? subtype, mp],
    fd,
  );
  if (r.code !== 0) {
    fsCloseQuiet(fd);
    throw new FuseError(Errno.EIO, `mount ${mp} failed: ${r.stderr || `exit ${r.code}`}`);
  }
  const info = await findMount(mp);
  installExitHook();
  const session = new FuseSession(fs, mp, info?.dev ?? "0:0", fd, opts);
  try {
    await withTimeout(session.start(Math.max(1, opts.outstandingReads ?? 1)), 10_000, "FUSE INIT");
  } catch (err) {
    await session.unmount();
    throw err;
  }
  if (info) await setReadahead(info.dev, session.config.maxReadahead);
  return session;
}

function openDevice(nonBlocking: boolean): Promise<number> {
  const flags = fs.constants.O_RDWR | (nonBlocking ? fs.constants.O_NONBLOCK : 0);
  return new Promise((resolve, reject) => {
    fs.open("/dev/fuse", flags, (err, fd) => {
      if (err) reject(new FuseError(errnoOf(err)[0], `open /dev/fuse: ${err.message}`));
      else resolve(fd);
    });
  });
}

function fsCloseQuiet(fd: number): void {
  fs.close(fd, () => {});
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new FuseError(Errno.ETIMEDOUT, `${what} timed out`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
