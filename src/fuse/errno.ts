/** Linux errno values a filesystem answers with, and the typed error that carries one. */

/** Linux errno numbers (x86_64 and arm64 share them). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOPNOTSUPP: 95,
  ECONNABORTED: 103,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ESTALE: 116,
} as const;

/** Name of an errno in {@link Errno}. */
export type ErrnoName = keyof typeof Errno;

/** An error a filesystem throws to answer a request with `errno` (e.g. `new FuseError(Errno.ENOENT)`). */
export class FuseError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? `${errnoName(errno)}`);
    this.name = "FuseError";
  }
}

const names = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** The symbolic name of an errno (`ENOENT`), or `errno N` when we do not know it. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}

/**
 * The errno that answers a request that failed with `err`: a {@link FuseError}'s own, a Node
 * system error's `code` (so a filesystem can let `fs.promises` errors through), EINTR for an
 * abort, and EIO for anything else (the second value tells the caller the error was unexpected).
 */
export function errnoOf(err: unknown): [errno: number, unexpected: boolean] {
  if (err instanceof FuseError) return [err.errno, false];
  if (err instanceof Error) {
    if (err.name === "AbortError") return [Errno.EINTR, false];
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code in Errno) return [Errno[code as ErrnoName], false];
  }
  return [Errno.EIO, true];
}
