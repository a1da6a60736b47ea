/**
 * The few libc calls `node:*` does not offer, through the runtime's FFI (`bun:ffi` under Bun,
 * `Deno.dlopen` under Deno; both work inside a compiled executable): copying a file descriptor
 * out of another process (`pidfd_open` + `pidfd_getfd`), `fcntl(O_NONBLOCK)`, and `sendmsg` with
 * `SCM_RIGHTS` for systemd's notify socket. Everything here is synchronous and cheap (a handful
 * of calls per mount or per restart), never on a request path.
 */
import { closeSync, openSync } from "node:fs";

/** The part of Deno's FFI used here, typed by hand: the source is checked without Deno's lib. */
interface DenoFfi {
  dlopen(lib: string, defs: Record<string, { parameters: string[]; result: string }>): {
    symbols: Record<string, (...a: unknown[]) => unknown>;
  };
  UnsafePointer: { of(buf: Uint8Array): unknown; value(p: unknown): number | bigint };
  UnsafePointerView: new (p: unknown) => { getInt32(off: number): number };
}

const g = globalThis as { Bun?: unknown; Deno?: DenoFfi };

/** pidfd_open(2) and pidfd_getfd(2): the same numbers on every architecture (since Linux 5.6). */
const SYS_PIDFD_OPEN = 434;
const SYS_PIDFD_GETFD = 438;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;

/** Causes an operator cannot guess from the errno alone, by `call/errno`. */
const HINTS: Record<string, string> = {
  // Measured in a booted systemd-nspawn (systemd 252): its default seccomp filter lacks it.
  "pidfd_getfd/1": " (EPERM: denied by a seccomp filter, e.g. systemd-nspawn's default one " +
    "(--system-call-filter=pidfd_getfd allows it), or by a ptrace policy)",
};

/** A libc call failed; `errno` is the C errno. */
export class LibcError extends Error {
  override name = "LibcError";
  constructor(readonly call: string, readonly errno: number) {
    super(`${call} failed: errno ${errno}${HINTS[`${call}/${errno}`] ?? ""}`);
  }
}

/** The calls, with plain numbers for ints and byte arrays for pointers, on either runtime. */
interface Libc {
  syscall(nr: number, a: number, b: number, c: number): number;
  close(fd: number): number;
  dup3(from: number, to: number, flags: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  socket(domain: number, type: number, protocol: number): number;
  sendmsg(fd: number, msg: Uint8Array, flags: number): number;
  poll(fds: Uint8Array, nfds: number, timeoutMs: number): number;
  /** The address of `buf`, to store in a struct. */
  address(buf: Uint8Array): bigint;
  errno(): number;
}

function bunLibc(): Libc {
  const ffi = process.getBuiltinModule("bun:ffi") as {
    dlopen(lib: string, defs: Record<string, { args: string[]; returns: string }>): {
      symbols: Record<string, (...a: unknown[]) => number | bigint>;
    };
    ptr(buf: Uint8Array): number;
    read: { i32(p: unknown, off: number): number };
  };
  const { symbols: s } = ffi.dlopen("libc.so.6", {
    syscall: { args: ["i64", "i64", "i64", "i64"], returns: "i64" },
    close: { args: ["i32"], returns: "i32" },
    dup3: { args: ["i32", "i32", "i32"], returns: "i32" },
    fcntl: { args: ["i32", "i32", "i32"], returns: "i32" },
    socket: { args: ["i32", "i32", "i32"], returns: "i32" },
    sendmsg: { args: ["i32", "ptr", "i32"], returns: "i64" },
    poll: { args: ["ptr", "u64", "i32"], returns: "i32" },
    __errno_location: { args: [], returns: "ptr" },
  });
  return {
    syscall: (nr, a, b, c) => Number(s.syscall(nr, a, b, c)),
    close: (fd) => Number(s.close(fd)),
    dup3: (a, b, f) => Number(s.dup3(a, b, f)),
    fcntl: (fd, cmd, arg) => Number(s.fcntl(fd, cmd, arg)),
    socket: (d, t, p) => Number(s.socket(d, t, p)),
    sendmsg: (fd, msg, flags) => Number(s.sendmsg(fd, msg, flags)),
    poll: (fds, n, t) => Number(s.poll(fds, n, t)),
    address: (buf) => BigInt(ffi.ptr(buf)),
    errno: () => ffi.read.i32(s.__errno_location(), 0),
  };
}

function denoLibc(): Libc {
  const D = g.Deno!;
  const { symbols: s } = D.dlopen("libc.so.6", {
    syscall: { parameters: ["i64", "i64", "i64", "i64"], result: "i64" },
    close: { parameters: ["i32"], result: "i32" },
    dup3: { parameters: ["i32", "i32", "i32"], result: "i32" },
    fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  });
  return {
    syscall: (nr, a, b, c) =>
      Number(s.syscall(BigInt(nr), BigInt(a), BigInt(b), BigInt(c)) as bigint),
    // i32 results come back as numbers, i64 ones as bigints.
    close: (fd) => s.close(fd) as number,
    dup3: (a, b, f) => s.dup3(a, b, f) as number,
    fcntl: (fd, cmd, arg) => s.fcntl(fd, cmd, arg) as number,
    socket: (d, t, p) => s.socket(d, t, p) as number,
    sendmsg: (fd, msg, flags) => Number(s.sendmsg(fd, msg, flags)),
    poll: (fds, n, t) => s.poll(fds, BigInt(n), t) as number,
    address: (buf) => BigInt(D.UnsafePointer.value(D.UnsafePointer.of(buf))),
    errno: () => new D.UnsafePointerView(s.__errno_location()).getInt32(0),
  };
}

let loaded: Libc | null | undefined;

/** The libc binding, or null where this runtime has no FFI (plain Node). */
export function libc(): Libc | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = typeof g.Bun !== "undefined"
      ? bunLibc()
      : typeof g.Deno !== "undefined"
      ? denoLibc()
      : null;
  } catch {
    loaded = null;
  }
  return loaded;
}

function need(): Libc {
  const c = libc();
  if (!c) throw new LibcError("dlopen libc.so.6", 38 /* ENOSYS */);
  return c;
}

function check(c: Libc, call: string, r: number): number {
  if (r < 0) throw new LibcError(call, c.errno());
  return r;
}

/**
 * Duplicates file descriptor `fd` of process `pid` into this process (the same open file, as
 * after `dup`; close-on-exec); needs the right to ptrace `pid` (root has it). The result works
 * with `node:fs` calls on this runtime.
 */
export function takeFd(pid: number, fd: number): number {
  const c = need();
  const pidfd = check(c, "pidfd_open", c.syscall(SYS_PIDFD_OPEN, pid, 0, 0));
  let raw: number;
  try {
    raw = check(c, "pidfd_getfd", c.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0));
  } finally {
    c.close(pidfd);
  }
  if (typeof g.Deno === "undefined") return raw;
  // Deno's node:fs only accepts descriptors it opened itself (EBADF otherwise): open a
  // placeholder through it and put the copied file in its place.
  const slot = openSync("/dev/null", "r");
  try {
    check(c, "dup3", c.dup3(raw, slot, O_CLOEXEC));
  } catch (err) {
    closeSync(slot);
    throw err;
  } finally {
    c.close(raw);
  }
  return slot;
}

/** Sets or clears `O_NONBLOCK` on `fd` (a flag of the open file, shared by every copy). */
export function setNonBlocking(fd: number, on: boolean): void {
  const c = need();
  const flags = check(c, "fcntl(F_GETFL)", c.fcntl(fd, F_GETFL, 0));
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) check(c, "fcntl(F_SETFL)", c.fcntl(fd, F_SETFL, next));
}

const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;

/**
 * Which of `fds` report an error or hang-up right now (`poll` with no wait): for /dev/fuse, a
 * connection that ended (unmounted or aborted).
 */
export function brokenFds(fds: readonly number[]): boolean[] {
  if (fds.length === 0) return [];
  const c = need();
  // struct pollfd { int fd; short events; short revents; }
  const buf = new Uint8Array(fds.length * 8);
  const v = new DataView(buf.buffer);
  fds.forEach((fd, i) => v.setInt32(i * 8, fd, true));
  check(c, "poll", c.poll(buf, fds.length, 0));
  return fds.map((_fd, i) => (v.getInt16(i * 8 + 6, true) & (POLLERR | POLLHUP | POLLNVAL)) !== 0);
}

/** Closes `fd`, ignoring errors. */
export function closeFd(fd: number): void {
  libc()?.close(fd);
}

function setU64(v: DataView, off: number, x: bigint | number): void {
  v.setBigUint64(off, BigInt(x), true);
}

/**
 * Sends one datagram `message` to the unix socket `address` (an `@name` is abstract), passing
 * `fds` along with `SCM_RIGHTS`: `sd_notify` without libsystemd. Struct layouts are the LP64
 * ones of x86_64 and arm64.
 */
export function sendDatagram(address: string, message: string, fds: readonly number[] = []): void {
  const c = need();
  const sock = check(c, "socket", c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  try {
    // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }
    const pathBytes = Buffer.from(address.startsWith("@") ? "\0" + address.slice(1) : address);
    if (pathBytes.length >= 108) throw new LibcError("sendmsg (socket path too long)", 36);
    const name = new Uint8Array(110);
    new DataView(name.buffer).setUint16(0, AF_UNIX, true);
    name.set(pathBytes, 2);
    const nameLen = 2 + pathBytes.length + (address.startsWith("@") ? 0 : 1);
    const body = new Uint8Array(Buffer.from(message));
    // struct iovec { void *iov_base; size_t iov_len; }
    const iov = new Uint8Array(16);
    const iv = new DataView(iov.buffer);
    setU64(iv, 0, c.address(body));
    setU64(iv, 8, body.length);
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; int fds[]; } (8-aligned)
    const control = new Uint8Array(fds.length ? 16 + Math.ceil((fds.length * 4) / 8) * 8 : 0);
    if (fds.length) {
      const cv = new DataView(control.buffer);
      setU64(cv, 0, 16 + fds.length * 4);
      cv.setInt32(8, SOL_SOCKET, true);
      cv.setInt32(12, SCM_RIGHTS, true);
      fds.forEach((fd, i) => cv.setInt32(16 + i * 4, fd, true));
    }
    // struct msghdr { name, namelen, iov, iovlen, control, controllen, flags }: 56 bytes.
    const msg = new Uint8Array(56);
    const mv = new DataView(msg.buffer);
    setU64(mv, 0, c.address(name));
    mv.setUint32(8, nameLen, true);
    setU64(mv, 16, c.address(iov));
    setU64(mv, 24, 1);
    setU64(mv, 32, control.length ? c.address(control) : 0);
    setU64(mv, 40, control.length);
    check(c, "sendmsg", c.sendmsg(sock, msg, MSG_NOSIGNAL));
  } finally {
    c.close(sock);
  }
}
