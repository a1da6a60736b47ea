/**
 * Wire codecs for the FUSE structs we read and write, with the field offsets of `linux/fuse.h`
 * spelled out once. All functions work on a caller's reused DataView: no allocation per request.
 */
import { ATTR_SIZE, IN_HEADER_SIZE, OUT_HEADER_SIZE } from "./_abi.ts";
import type { Attr, StatFs } from "./types.ts";

const TWO32 = 4294967296;

/** Reads a u64 as a number (ids, offsets and sizes stay far below 2^53). */
export function getU64(v: DataView, off: number): number {
  return v.getUint32(off + 4, true) * TWO32 + v.getUint32(off, true);
}

/** Writes a non-negative integer below 2^53 as a u64. */
export function setU64(v: DataView, off: number, value: number): void {
  v.setUint32(off, value % TWO32, true);
  v.setUint32(off + 4, Math.floor(value / TWO32), true);
}

/** Bit 63 of `unique` (`FUSE_UNIQUE_RESEND`): the kernel resent this request after NOTIFY_RESEND. */
const RESEND_BIT_HIGH = 0x80000000;

/**
 * Reads a request id. Resent requests carry bit 63, which a double cannot hold beside the low
 * bits; they come out negative (the kernel's ids are small and even, never 0), and
 * {@link setUnique} writes them back with the bit, as the kernel matches the reply on it.
 */
export function getUnique(v: DataView, off: number): number {
  const high = v.getUint32(off + 4, true);
  const id = (high & ~RESEND_BIT_HIGH) * TWO32 + v.getUint32(off, true);
  return high & RESEND_BIT_HIGH ? -id : id;
}

/** Writes a request id read by {@link getUnique}. */
export function setUnique(v: DataView, off: number, unique: number): void {
  const id = Math.abs(unique);
  v.setUint32(off, id % TWO32, true);
  v.setUint32(off + 4, (Math.floor(id / TWO32) | (unique < 0 ? RESEND_BIT_HIGH : 0)) >>> 0, true);
}

/** Decoded `struct fuse_in_header`, reused from request to request. */
export interface InHeader {
  len: number;
  opcode: number;
  /** See {@link getUnique}. */
  unique: number;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  /** Length of extensions after the arguments, in bytes. */
  extLen: number;
}

/** Decodes `struct fuse_in_header` at `off` into `h`. */
export function readInHeader(v: DataView, off: number, h: InHeader): void {
  h.len = v.getUint32(off + 0, true);
  h.opcode = v.getUint32(off + 4, true);
  h.unique = getUnique(v, off + 8);
  h.nodeid = getU64(v, off + 16);
  h.uid = v.getUint32(off + 24, true);
  h.gid = v.getUint32(off + 28, true);
  h.pid = v.getUint32(off + 32, true);
  h.extLen = v.getUint16(off + 36, true) * 8;
}

/** Offset of a request's arguments after its header. */
export const ARGS = IN_HEADER_SIZE;

/** Writes `struct fuse_out_header` at 0. */
export function writeOutHeader(v: DataView, len: number, error: number, unique: number): void {
  v.setUint32(0, len, true);
  v.setInt32(4, error, true);
  setUnique(v, 8, unique);
}

/** Offset of a reply's payload after its header. */
export const PAYLOAD = OUT_HEADER_SIZE;

/** Writes `struct fuse_attr` at `off`. */
export function writeAttr(v: DataView, off: number, ino: number, a: Attr): void {
  setU64(v, off + 0, ino);
  setU64(v, off + 8, a.size);
  setU64(v, off + 16, a.blocks ?? Math.ceil(a.size / 512));
  setU64(v, off + 24, a.atimeSec ?? a.mtimeSec);
  setU64(v, off + 32, a.mtimeSec);
  setU64(v, off + 40, a.ctimeSec ?? a.mtimeSec);
  v.setUint32(off + 48, a.atimeNsec ?? a.mtimeNsec, true);
  v.setUint32(off + 52, a.mtimeNsec, true);
  v.setUint32(off + 56, a.ctimeNsec ?? a.mtimeNsec, true);
  v.setUint32(off + 60, a.mode, true);
  v.setUint32(off + 64, a.nlink, true);
  v.setUint32(off + 68, a.uid, true);
  v.setUint32(off + 72, a.gid, true);
  v.setUint32(off + 76, a.rdev, true);
  v.setUint32(off + 80, a.blksize ?? 4096, true);
  v.setUint32(off + 84, 0, true);
}

/** A cache timeout split the way the kernel wants it. */
export interface Timeout {
  sec: number;
  nsec: number;
}

/** Converts seconds to a {@link Timeout}. */
export function timeout(seconds: number): Timeout {
  const s = Math.max(0, seconds);
  const sec = Math.floor(s);
  return { sec, nsec: Math.min(999_999_999, Math.round((s - sec) * 1e9)) };
}

/** Writes `struct fuse_entry_out` at `off` (node 0 = a cacheable negative entry). */
export function writeEntryOut(
  v: DataView,
  off: number,
  node: number,
  generation: number,
  entryValid: Timeout,
  attrValid: Timeout,
  attr: Attr | undefined,
): void {
  setU64(v, off + 0, node);
  setU64(v, off + 8, generation);
  setU64(v, off + 16, entryValid.sec);
  setU64(v, off + 24, attrValid.sec);
  v.setUint32(off + 32, entryValid.nsec, true);
  v.setUint32(off + 36, attrValid.nsec, true);
  if (attr) writeAttr(v, off + 40, node, attr);
  else new Uint8Array(v.buffer, v.byteOffset + off + 40, ATTR_SIZE).fill(0);
}

/** Writes `struct fuse_attr_out` at `off`. */
export function writeAttrOut(
  v: DataView,
  off: number,
  node: number,
  attrValid: Timeout,
  attr: Attr,
): void {
  setU64(v, off + 0, attrValid.sec);
  v.setUint32(off + 8, attrValid.nsec, true);
  v.setUint32(off + 12, 0, true);
  writeAttr(v, off + 16, node, attr);
}

/** Writes `struct fuse_open_out` at `off`. */
export function writeOpenOut(v: DataView, off: number, fh: number, openFlags: number): void {
  setU64(v, off + 0, fh);
  v.setUint32(off + 8, openFlags, true);
  v.setUint32(off + 12, 0, true);
}

/** Writes `struct fuse_statfs_out` (a `fuse_kstatfs`) at `off`. */
export function writeStatfsOut(v: DataView, off: number, s: StatFs): void {
  setU64(v, off + 0, s.blocks);
  setU64(v, off + 8, s.bfree);
  setU64(v, off + 16, s.bavail);
  setU64(v, off + 24, s.files);
  setU64(v, off + 32, s.ffree);
  v.setUint32(off + 40, s.bsize, true);
  v.setUint32(off + 44, s.namelen, true);
  v.setUint32(off + 48, s.frsize, true);
  new Uint8Array(v.buffer, v.byteOffset + off + 52, 28).fill(0);
}

/** Writes `struct fuse_dirent` (without the name) at `off`. */
export function writeDirent(
  v: DataView,
  off: number,
  ino: number,
  next: number,
  nameLen: number,
  mode: number,
): void {
  setU64(v, off + 0, ino);
  setU64(v, off + 8, next);
  v.setUint32(off + 16, nameLen, true);
  // The dirent type is the S_IFMT nibble of the mode (DT_REG = 8 = S_IFREG >> 12, …).
  v.setUint32(off + 20, (mode >>> 12) & 0xf, true);
}

/** Decoded `struct fuse_init_in`. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

/** Decodes `struct fuse_init_in` at `off`. */
export function readInitIn(v: DataView, off: number): InitIn {
  return {
    major: v.getUint32(off + 0, true),
    minor: v.getUint32(off + 4, true),
    maxReadahead: v.getUint32(off + 8, true),
    flags: v.getUint32(off + 12, true),
  };
}

/** Fields of `struct fuse_init_out` we set. */
export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

/** Writes `struct fuse_init_out` at `off` (64 bytes, unused fields zero). */
export function writeInitOut(v: DataView, off: number, o: InitOut): void {
  new Uint8Array(v.buffer, v.byteOffset + off, 64).fill(0);
  v.setUint32(off + 0, o.major, true);
  v.setUint32(off + 4, o.minor, true);
  v.setUint32(off + 8, o.maxReadahead, true);
  v.setUint32(off + 12, o.flags, true);
  v.setUint16(off + 16, o.maxBackground, true);
  v.setUint16(off + 18, o.congestionThreshold, true);
  v.setUint32(off + 20, o.maxWrite, true);
  v.setUint32(off + 24, o.timeGran, true);
  v.setUint16(off + 28, o.maxPages, true);
}
