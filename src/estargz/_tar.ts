/**
 * Just enough tar (ustar, PAX, GNU long names, base-256 numbers) to convert layers: a streaming
 * reader that hands back each entry's raw header blocks untouched (so the output tar keeps every
 * input byte of metadata) together with the decoded header, and a writer for the few headers we
 * add ourselves (landmarks, the TOC).
 */
import { TarError } from "./errors.ts";

/** Tar block size. */
export const BLOCK = 512;
/**
 * Largest PAX or GNU long-name header body read into memory (Go's archive/tar stops at the
 * same 1 MiB): its size field comes from the input, and 8 GiB is one octal field away.
 */
export const MAX_EXTENSION_BYTES = 1 << 20;

/** A decoded header, after applying PAX and GNU long-name extensions. */
export interface TarHeader {
  name: string;
  linkName: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Milliseconds since the epoch (PAX `mtime` keeps sub-second precision). */
  mtimeMs: number;
  userName: string;
  groupName: string;
  devMajor: number;
  devMinor: number;
  /** `SCHILY.xattr.*` PAX records (values as raw bytes). */
  xattrs: Map<string, Uint8Array>;
}

const dec = new TextDecoder();
const enc = new TextEncoder();

function cstr(b: Uint8Array, off: number, len: number): string {
  let end = off;
  const max = off + len;
  while (end < max && b[end] !== 0) end++;
  return dec.decode(b.subarray(off, end));
}

/** Reads a numeric field: octal text, or GNU base-256 when the high bit is set. */
function num(b: Uint8Array, off: number, len: number): number {
  if (b[off] & 0x80) {
    let n = b[off] & 0x7f;
    for (let i = 1; i < len; i++) n = n * 256 + b[off + i];
    // 12 bytes of base-256 hold 95 bits; past 2^53 the value is not exact (nor a real time).
    if (!Number.isSafeInteger(n)) throw new TarError("numeric field out of range");
    return n;
  }
  const s = cstr(b, off, len).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarError(`invalid numeric field ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

function checksumOk(b: Uint8Array): boolean {
  const stored = num(b, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 32 : b[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

/** Parses PAX extended header records (`"%d %s=%s\n"`). */
export function parsePax(data: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  let p = 0;
  while (p < data.length) {
    let sp = p;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = parseInt(dec.decode(data.subarray(p, sp)), 10);
    if (!Number.isInteger(len) || len <= 0 || p + len > data.length) {
      throw new TarError("malformed PAX record");
    }
    const rec = data.subarray(sp + 1, p + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new TarError("malformed PAX record");
    out.set(dec.decode(rec.subarray(0, eq)), rec.slice(eq + 1));
    p += len;
  }
  return out;
}

/** Pulls exact byte counts out of an async iterable of chunks. */
export class ByteSource {
  #it: AsyncIterator<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #done = false;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.#it = src[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#buf.length) {
      if (this.#done) return false;
      const r = await this.#it.next();
      if (r.done) {
        this.#done = true;
        return false;
      }
      this.#buf = r.value;
      this.#pos = 0;
    }
    return true;
  }

  /** Up to `max` bytes (at least 1 unless at end); the view is valid until the next call. */
  async readSome(max: number): Promise<Uint8Array | undefined> {
    if (!(await this.#fill())) return undefined;
    const n = Math.min(max, this.#buf.length - this.#pos);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** Exactly `n` bytes (a fresh copy), or undefined at a clean end; throws when cut short. */
  async readExact(n: number): Promise<Uint8Array | undefined> {
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const part = await this.readSome(n - got);
      if (!part) {
        if (got === 0) return undefined;
        throw new TarError(`unexpected end of tar stream (wanted ${n} bytes, got ${got})`);
      }
      out.set(part, got);
      got += part.length;
    }
    return out;
  }

  /** Peeks at up to `n` leading bytes without consuming them (only before any read). */
  async peek(n: number): Promise<Uint8Array> {
    await this.#fill();
    return this.#buf.subarray(this.#pos, this.#pos + n);
  }

  /** Stops the underlying iterator. */
  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#it.return?.();
    }
  }
}

/** One entry of a tar stream: decoded header plus the raw blocks that encoded it. */
export interface TarEntry {
  header: TarHeader;
  /** Every header block (extension headers, their data, the main header), verbatim. */
  raw: Uint8Array;
}

/**
 * Streaming tar reader. After {@link next} returns an entry, read its payload with
 * {@link readData} (or let the next {@link next} call skip it).
 */
export class TarReader {
  #remaining = 0;
  #padding = 0;
  /** Bytes of the stream consumed so far. */
  consumed = 0;
  /** Set once the end-of-archive marker (or a clean end) was reached. */
  ended = false;

  constructor(readonly src: ByteSource) {}

  async #block(): Promise<Uint8Array | undefined> {
    const b = await this.src.readExact(BLOCK);
    if (b) this.consumed += BLOCK;
    return b;
  }

  async #skip(n: number): Promise<void> {
    while (n > 0) {
      const part = await this.src.readSome(n);
      if (!part) throw new TarError("unexpected end of tar stream inside an entry");
      n -= part.length;
      this.consumed += part.length;
    }
  }

  async #readBody(size: number): Promise<Uint8Array> {
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    const b = await this.src.readExact(padded);
    if (!b && padded > 0) throw new TarError("unexpected end of tar stream in an extension header");
    this.consumed += padded;
    return b ?? new Uint8Array(0);
  }

  /** The next entry, or undefined at the end of the archive. */
  async next(): Promise<TarEntry | undefined> {
    await this.#skip(this.#remaining + this.#padding);
    this.#remaining = 0;
    this.#padding = 0;
    if (this.ended) return undefined;
    const raws: Uint8Array[] = [];
    let pax = new Map<string, Uint8Array>();
    const globalPax = new Map<string, Uint8Array>();
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const b = await this.#block();
      if (!b) {
        if (raws.length) throw new TarError("tar stream ends after an extension header");
        this.ended = true;
        return undefined;
      }
      if (isZeroBlock(b)) {
        if (raws.length) throw new TarError("zero block after an extension header");
        // End of archive: whatever follows (the second zero block, padding) is not ours.
        this.ended = true;
        return undefined;
      }
      if (!checksumOk(b)) throw new TarError("tar header checksum mismatch");
      raws.push(b);
      const typeflag = b[156] === 0 ? "0" : String.fromCharCode(b[156]);
      const size = num(b, 124, 12);
      if (typeflag === "x" || typeflag === "g" || typeflag === "L" || typeflag === "K") {
        if (size > MAX_EXTENSION_BYTES) {
          throw new TarError(
            `extension header of ${size} bytes (more than ${MAX_EXTENSION_BYTES})`,
          );
        }
        const body = await this.#readBody(size);
        raws.push(body);
        const data = body.subarray(0, size);
        if (typeflag === "x") pax = new Map([...pax, ...parsePax(data)]);
        else if (typeflag === "g") { for (const [k, v] of parsePax(data)) globalPax.set(k, v); }
        else if (typeflag === "L") longName = cstr(data, 0, data.length);
        else longLink = cstr(data, 0, data.length);
        continue;
      }
      if (typeflag === "S") throw new TarError("GNU sparse files are not supported");
      const magic = cstr(b, 257, 6);
      const prefix = magic === "ustar" ? cstr(b, 345, 155) : "";
      let name = longName ?? (prefix ? `${prefix}/${cstr(b, 0, 100)}` : cstr(b, 0, 100));
      let linkName = longLink ?? cstr(b, 157, 100);
      const h: TarHeader = {
        name,
        linkName,
        typeflag: typeflag === "\0" || typeflag === "7" ? "0" : typeflag,
        mode: num(b, 100, 8),
        uid: num(b, 108, 8),
        gid: num(b, 116, 8),
        size,
        mtimeMs: num(b, 136, 12) * 1000,
        userName: cstr(b, 265, 32),
        groupName: cstr(b, 297, 32),
        devMajor: num(b, 329, 8),
        devMinor: num(b, 337, 8),
        xattrs: new Map(),
      };
      for (const [k, v] of pax) {
        const s = () => dec.decode(v);
        switch (k) {
          case "path":
            name = s();
            h.name = name;
            break;
          case "linkpath":
            linkName = s();
            h.linkName = linkName;
            break;
          case "size":
            h.size = Number(s());
            break;
          case "uid":
            h.uid = Number(s());
            break;
          case "gid":
            h.gid = Number(s());
            break;
          case "uname":
            h.userName = s();
            break;
          case "gname":
            h.groupName = s();
            break;
          case "mtime":
            h.mtimeMs = Math.round(Number(s()) * 1000);
            break;
          default:
            if (k.startsWith("SCHILY.xattr.")) h.xattrs.set(k.slice(13), v);
        }
      }
      // Links, devices, directories and fifos have no payload whatever their size field says
      // (Go's archive/tar reads them the same way).
      if ("123456".includes(h.typeflag)) h.size = 0;
      if (!Number.isSafeInteger(h.size) || h.size < 0) throw new TarError("invalid entry size");
      this.#remaining = h.size;
      this.#padding = (BLOCK - (h.size % BLOCK)) % BLOCK;
      const raw = raws.length === 1 ? raws[0] : concat(raws);
      return { header: h, raw };
    }
  }

  /** Reads up to `max` payload bytes of the current entry; undefined when it is exhausted. */
  async readData(max: number): Promise<Uint8Array | undefined> {
    if (this.#remaining === 0) return undefined;
    const part = await this.src.readSome(Math.min(max, this.#remaining));
    if (!part) throw new TarError("unexpected end of tar stream inside an entry");
    this.#remaining -= part.length;
    this.consumed += part.length;
    return part;
  }

  /** Payload bytes of the current entry not read yet. */
  get remaining(): number {
    return this.#remaining;
  }
}

/** Concatenates byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function putStr(b: Uint8Array, off: number, len: number, s: string): void {
  const bytes = enc.encode(s);
  if (bytes.length > len) throw new TarError(`tar field too long: ${s}`);
  b.set(bytes, off);
}

function putOctal(b: Uint8Array, off: number, len: number, n: number): void {
  putStr(b, off, len, n.toString(8).padStart(len - 1, "0"));
}

/** A plain ustar header for a regular file we add ourselves (name < 100 bytes, small sizes). */
export function ustarFileHeader(
  name: string,
  size: number,
  opts: { mode?: number; mtimeSec?: number } = {},
): Uint8Array {
  const b = new Uint8Array(BLOCK);
  putStr(b, 0, 100, name);
  putOctal(b, 100, 8, opts.mode ?? 0);
  putOctal(b, 108, 8, 0);
  putOctal(b, 116, 8, 0);
  putOctal(b, 124, 12, size);
  putOctal(b, 136, 12, opts.mtimeSec ?? 0);
  b[156] = 0x30;
  putStr(b, 257, 6, "ustar");
  putStr(b, 263, 2, "00");
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  putStr(b, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return b;
}

/** Zero bytes that pad a payload of `size` bytes to a block boundary. */
export function padding(size: number): Uint8Array {
  return new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK);
}
