/**
 * Streaming readers for range responses: `multipart/byteranges` bodies (RFC 9110 §14.6) and
 * `Content-Range` values.
 */
import { RegistryError } from "./errors.ts";

/** One received piece of the blob. */
export interface Segment {
  /** Offset of `data` in the blob. */
  start: number;
  data: Uint8Array;
}

/** Parses `bytes START-END/TOTAL` (TOTAL may be `*`). */
export function parseContentRange(
  value: string | null,
): { start: number; end: number; total?: number } {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value ?? "");
  if (!m) throw new RegistryError(`invalid Content-Range "${value ?? ""}"`);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new RegistryError(`invalid Content-Range "${value}"`);
  return { start, end, ...(m[3] !== "*" ? { total: Number(m[3]) } : {}) };
}

const MAX_LINE = 16 * 1024;
const EMPTY = new Uint8Array(0);

/** Buffered reads (lines, exact byte counts) over a byte stream. */
class StreamReader {
  private buf: Uint8Array = EMPTY;
  private pos = 0;

  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  private async more(): Promise<boolean> {
    const { done, value } = await this.reader.read();
    if (done) return false;
    if (this.pos < this.buf.length) {
      const merged = new Uint8Array(this.buf.length - this.pos + value.length);
      merged.set(this.buf.subarray(this.pos));
      merged.set(value, this.buf.length - this.pos);
      this.buf = merged;
    } else {
      this.buf = value;
    }
    this.pos = 0;
    return true;
  }

  /** The next line without its CR LF; undefined at the end of the stream. */
  async line(): Promise<string | undefined> {
    for (;;) {
      const nl = this.buf.indexOf(10, this.pos);
      if (nl >= 0) {
        let end = nl;
        if (end > this.pos && this.buf[end - 1] === 13) end--;
        const s = new TextDecoder().decode(this.buf.subarray(this.pos, end));
        this.pos = nl + 1;
        return s;
      }
      if (this.buf.length - this.pos > MAX_LINE) throw new RegistryError("multipart line too long");
      if (!(await this.more())) {
        if (this.pos >= this.buf.length) return undefined;
        const s = new TextDecoder().decode(this.buf.subarray(this.pos));
        this.pos = this.buf.length;
        return s;
      }
    }
  }

  /** Exactly `n` bytes; throws if the stream ends first. */
  async exact(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.pos >= this.buf.length && !(await this.more())) {
        throw new Error(`body ended after ${filled} of ${n} bytes`);
      }
      const take = Math.min(n - filled, this.buf.length - this.pos);
      out.set(this.buf.subarray(this.pos, this.pos + take), filled);
      filled += take;
      this.pos += take;
    }
    return out;
  }
}

/** The `boundary` parameter of a `multipart/…` Content-Type, or undefined for other types. */
export function multipartBoundary(contentType: string | null): string | undefined {
  const ct = contentType ?? "";
  if (!/^\s*multipart\//i.test(ct)) return undefined;
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(ct);
  const b = m?.[1] ?? m?.[2];
  if (!b) throw new RegistryError("multipart response without boundary");
  return b;
}

/**
 * Reads every part of a `multipart/byteranges` body. Part lengths come from each part's
 * Content-Range, so part data is copied once and never scanned for the boundary.
 */
export async function readMultipart(
  body: ReadableStream<Uint8Array>,
  boundary: string,
): Promise<Segment[]> {
  const reader = new StreamReader(body.getReader());
  const delimiter = `--${boundary}`;
  const parts: Segment[] = [];
  for (;;) {
    const line = await reader.line();
    if (line === undefined) throw new Error("multipart body ended before its closing delimiter");
    const trimmed = line.trimEnd();
    if (trimmed === `${delimiter}--`) return parts;
    if (trimmed !== delimiter) continue; // preamble or the CR LF after a part
    let range: string | null = null;
    for (;;) {
      const h = await reader.line();
      if (h === undefined) throw new Error("multipart body ended inside part headers");
      if (h === "") break;
      const colon = h.indexOf(":");
      if (colon > 0 && h.slice(0, colon).trim().toLowerCase() === "content-range") {
        range = h.slice(colon + 1).trim();
      }
    }
    const { start, end } = parseContentRange(range);
    parts.push({ start, data: await reader.exact(end - start + 1) });
  }
}

/** Reads up to `limit` bytes of a body, then stops (cancelling the rest). */
export async function readPrefix(
  body: ReadableStream<Uint8Array>,
  limit: number,
): Promise<Uint8Array> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (total < limit) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.length;
  }
  if (total >= limit) await reader.cancel().catch(() => {});
  const out = new Uint8Array(Math.min(total, limit));
  let off = 0;
  for (const c of chunks) {
    const take = Math.min(c.length, out.length - off);
    out.set(c.subarray(0, take), off);
    off += take;
    if (off >= out.length) break;
  }
  return out;
}

/**
 * Reads a body of exactly `n` bytes into one buffer allocated up front (a single copy: faster
 * than `arrayBuffer()` on Deno and than collecting chunks on Bun). Throws when the body ends
 * early or runs long.
 */
export async function readExact(body: ReadableStream<Uint8Array>, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  const reader = body.getReader();
  let off = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (off + value.length > n) {
      await reader.cancel().catch(() => {});
      throw new RegistryError(`body longer than the ${n} bytes announced`);
    }
    out.set(value, off);
    off += value.length;
  }
  if (off < n) throw new Error(`body ended after ${off} of ${n} bytes`);
  return out;
}
