/**
 * The converter: a tar layer (plain, gzip or zstd, detected) in, a gzip eStargz or zstd:chunked
 * blob out. The input is streamed; only with prioritized files is it first spilled, decompressed,
 * to a temp file so that entries can be reordered. Each chunk starts a new gzip member / zstd
 * frame; members are compressed in parallel by a {@link CompressorPool} and written in order.
 */
import { createHash, type Hash } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { pipeline, Readable } from "node:stream";
import * as zlib from "node:zlib";
import { compressMember, CompressorPool } from "./_compress.ts";
import { zstdFrames } from "./_zstd.ts";
import { EstargzBlob } from "./reader.ts";
import { EstargzError, InvalidEntryError, TarError } from "./errors.ts";
import { encodeGzipFooter, encodeZstdFooterFrame, ZSTD_SKIPPABLE_MAGIC } from "./footer.ts";
import {
  BLOCK,
  ByteSource,
  concat,
  padding,
  type TarHeader,
  TarReader,
  ustarFileHeader,
} from "./_tar.ts";
import {
  cleanEntryName,
  encodeToc,
  formatModtime,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  TOC_TAR_NAME,
  type TocEntry,
} from "./toc.ts";

/** Options of {@link convertLayer}. */
export interface ConvertOptions {
  /** `gzip` eStargz (default) or `zstd` (zstd:chunked). */
  format?: "gzip" | "zstd";
  /** Compression level: gzip default 9, zstd default 3 (as upstream). */
  level?: number;
  /** Largest chunk of a file's content in one member; default 4 MiB. */
  chunkSize?: number;
  /** Files smaller than this share a member with the previous payload (`innerOffset`); 0 = off. */
  minChunkSize?: number;
  /** Files to place first, in this order, followed by `.prefetch.landmark`. */
  prioritizedFiles?: readonly string[];
  /** Compression workers; default: available cores (max 4); 0 = compress inline. */
  workers?: number;
  /** Directory for the spill file used with prioritized files; default os.tmpdir(). */
  tmpDir?: string;
}

/** What {@link convertLayer} produced. */
export interface ConvertResult {
  /** `sha256:…` of the compressed blob. */
  digest: string;
  /** Size of the compressed blob. */
  size: number;
  /** `sha256:…` of the uncompressed blob (the tar inside). */
  diffID: string;
  /** `sha256:…` of the TOC JSON. */
  tocDigest: string;
  /** Size of the uncompressed blob. */
  uncompressedSize: number;
  /** Prioritized files that were not in the layer. */
  missedPrioritizedFiles: string[];
}

/** Where the blob goes: a file path, or anything with an async `write`. */
export type BlobSink = string | { write(chunk: Uint8Array): Promise<unknown> };
/** What a layer can be read from: a file path, bytes, or a stream of bytes. */
export type LayerSource =
  | string
  | Uint8Array
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>;

const DEFAULT_CHUNK_SIZE = 4 << 20;
const LANDMARK_CONTENT = new Uint8Array([0x0f]);
const READ_SIZE = 1 << 20;
const WRITE_BATCH = 1 << 20;

function toIterable(src: LayerSource): AsyncIterable<Uint8Array> {
  if (typeof src === "string") return fs.createReadStream(src, { highWaterMark: READ_SIZE });
  if (src instanceof Uint8Array) return Readable.from([src]);
  return src as AsyncIterable<Uint8Array>;
}

/** The input with gzip or zstd compression (detected by magic) removed. */
async function decompressed(src: LayerSource): Promise<ByteSource> {
  const it = toIterable(src);
  const probe = new ByteSource(it);
  const head = await probe.peek(4);
  const isGzip = head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08;
  const isZstd = head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
  if (isZstd) return new ByteSource(zstdFrames(probe));
  if (!isGzip) return probe;
  async function* raw(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const part = await probe.readSome(READ_SIZE);
      if (!part) return;
      yield Uint8Array.prototype.slice.call(part);
    }
  }
  // pipeline, not pipe: a corrupt stream must reject the read, not emit an unhandled error.
  const gunzip = pipeline(Readable.from(raw()), zlib.createGunzip(), () => {});
  return new ByteSource(typedErrors(gunzip, "gzip"));
}

/** Rethrows the decompressor's errors (plain zlib errors) as {@link TarError}. */
async function* typedErrors(
  it: AsyncIterable<Uint8Array>,
  what: string,
): AsyncGenerator<Uint8Array> {
  try {
    yield* it;
  } catch (err) {
    if (err instanceof EstargzError) throw err;
    throw new TarError(`corrupt ${what} input: ${(err as Error).message}`);
  }
}

/** One input entry as the converter sees it, with a way to read its payload. */
interface SourceEntry {
  header: TarHeader;
  raw: Uint8Array;
  /** Never share a member (landmarks: prefetch stops exactly at their offset). */
  ownMember?: boolean;
  read(max: number): Promise<Uint8Array | undefined>;
}

interface Pending {
  entry: TocEntry;
  segment: number;
}

/** Writes ordered members to the sink, hashing and counting what goes out. */
class BlobOutput {
  readonly hash: Hash = createHash("sha256");
  size = 0;
  #fh: fsp.FileHandle | undefined;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  constructor(readonly sink: { write(chunk: Uint8Array): Promise<unknown> }) {}

  static async open(sink: BlobSink): Promise<BlobOutput> {
    if (typeof sink !== "string") return new BlobOutput(sink);
    const fh = await fsp.open(sink, "w");
    const out = new BlobOutput({
      write: async (b: Uint8Array) => {
        let done = 0;
        while (done < b.length) {
          done += (await fh.write(b, done, b.length - done)).bytesWritten;
        }
      },
    });
    out.#fh = fh;
    return out;
  }

  /** Appends bytes; they reach the sink in batches of about 1 MiB (one syscall each). */
  async write(b: Uint8Array): Promise<void> {
    this.hash.update(b);
    this.size += b.length;
    this.#pending.push(b);
    this.#pendingBytes += b.length;
    if (this.#pendingBytes >= WRITE_BATCH) await this.flush();
  }

  /** Hands everything appended so far to the sink. */
  async flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const data = this.#pending.length === 1 ? this.#pending[0] : concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    await this.sink.write(data);
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}

/** The stateful part of one conversion: members being built, TOC entries, hashes. */
class LayerWriter {
  readonly entries: TocEntry[] = [];
  readonly pending: Pending[] = [];
  readonly diffHash = createHash("sha256");
  uncompressedSize = 0;
  #cur: Uint8Array[] = [];
  #curLen = 0;
  #curHasPayload = false;
  #segment = 0;
  #queue: { job: Promise<Uint8Array>; bytes: number }[] = [];
  #queuedBytes = 0;
  readonly segmentOffsets: number[] = [];
  readonly maxInflight: number;
  /** Memory bound: uncompressed bytes of members queued but not yet written. */
  readonly maxQueuedBytes: number;

  constructor(
    readonly out: BlobOutput,
    readonly pool: CompressorPool,
    readonly chunkSize: number,
    readonly minChunkSize: number,
  ) {
    // Enough members in flight to keep every worker busy with whole batches.
    this.maxInflight = Math.max(2, pool.size * 4096);
    this.maxQueuedBytes = Math.max(32 << 20, 2 * (pool.size + 1) * chunkSize);
  }

  #push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.diffHash.update(b);
    this.uncompressedSize += b.length;
    this.#cur.push(b);
    this.#curLen += b.length;
  }

  async #seal(): Promise<void> {
    if (this.#curLen === 0) return;
    const data = this.#cur.length === 1 ? this.#cur[0] : concat(this.#cur);
    this.#cur = [];
    this.#curLen = 0;
    this.#curHasPayload = false;
    this.#segment++;
    const job = this.pool.compress(data);
    // A failed conversion abandons queued jobs; their rejections are not news.
    job.catch(() => {});
    this.#queue.push({ job, bytes: data.length });
    this.#queuedBytes += data.length;
    while (this.#queue.length > this.maxInflight || this.#queuedBytes > this.maxQueuedBytes) {
      await this.#writeOne();
    }
  }

  async #writeOne(): Promise<void> {
    const next = this.#queue.shift();
    if (!next) return;
    this.#queuedBytes -= next.bytes;
    this.pool.flush();
    const bytes = await next.job;
    this.segmentOffsets.push(this.out.size);
    await this.out.write(bytes);
  }

  /** Seals the last member and writes everything still queued. */
  async flush(): Promise<void> {
    await this.#seal();
    while (this.#queue.length) await this.#writeOne();
  }

  /** Appends one entry: its raw header bytes, its TOC entry, and its chunked payload. */
  async add(src: SourceEntry): Promise<void> {
    const h = src.header;
    const name = cleanEntryName(h.name);
    const entry: TocEntry = { name, type: tocType(h, name) };
    if (entry.type === "reg") entry.size = h.size;
    const modtime = formatModtime(h.mtimeMs);
    if (modtime) entry.modtime = modtime;
    if (entry.type === "symlink") entry.linkName = h.linkName;
    if (entry.type === "hardlink") {
      try {
        entry.linkName = cleanEntryName(h.linkName);
      } catch {
        throw new InvalidEntryError(
          name,
          `hardlink target ${JSON.stringify(h.linkName)} escapes the root`,
        );
      }
    }
    if (h.mode) entry.mode = h.mode;
    if (h.uid) entry.uid = h.uid;
    if (h.gid) entry.gid = h.gid;
    if (h.userName) entry.userName = h.userName;
    if (h.groupName) entry.groupName = h.groupName;
    if (entry.type === "char" || entry.type === "block") {
      if (h.devMajor) entry.devMajor = h.devMajor;
      if (h.devMinor) entry.devMinor = h.devMinor;
    }
    if (h.xattrs.size) {
      entry.xattrs = {};
      for (const [k, v] of h.xattrs) entry.xattrs[k] = Buffer.from(v).toString("base64");
    }
    // Long runs of header-only entries are cut into members of bounded size.
    if (this.#curLen >= this.chunkSize) await this.#seal();
    this.#push(src.raw);
    if (entry.type !== "reg" || h.size === 0) {
      if (entry.type === "reg") entry.digest = EMPTY_DIGEST;
      this.entries.push(entry);
      return;
    }
    // A file of one chunk has the chunk's digest: hash it once.
    const fileHash = h.size > this.chunkSize ? createHash("sha256") : undefined;
    const fileEntry = entry;
    let chunk: TocEntry = entry;
    let written = 0;
    while (written < h.size) {
      const size = Math.min(this.chunkSize, h.size - written);
      if (size === this.chunkSize) chunk.chunkSize = size;
      const pack = !src.ownMember && this.minChunkSize > 0 && h.size < this.minChunkSize &&
        this.#curHasPayload &&
        this.#curLen < this.minChunkSize;
      if (!pack) await this.#seal();
      if (written > 0) chunk.chunkOffset = written;
      if (this.#curLen > 0) chunk.innerOffset = this.#curLen;
      this.pending.push({ entry: chunk, segment: this.#segment });
      const chunkHash = createHash("sha256");
      let left = size;
      while (left > 0) {
        const part = await src.read(Math.min(left, READ_SIZE));
        if (!part) throw new TarError(`unexpected end of payload of ${JSON.stringify(h.name)}`);
        const copy = Uint8Array.prototype.slice.call(part);
        chunkHash.update(copy);
        fileHash?.update(copy);
        this.#push(copy);
        left -= copy.length;
      }
      this.#curHasPayload = true;
      chunk.chunkDigest = "sha256:" + chunkHash.digest("hex");
      this.entries.push(chunk);
      written += size;
      chunk = { name, type: "chunk" };
    }
    fileEntry.digest = fileHash ? "sha256:" + fileHash.digest("hex") : fileEntry.chunkDigest;
    this.#push(padding(h.size));
  }

  /** Appends bytes outside any entry (the end-of-archive blocks). */
  addRaw(b: Uint8Array): void {
    this.#push(b);
  }

  /** Fills in every chunk's compressed offset; valid after {@link flush}. */
  resolveOffsets(): void {
    for (const p of this.pending) p.entry.offset = this.segmentOffsets[p.segment];
  }
}

const EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

function tocType(h: TarHeader, name: string): TocEntry["type"] {
  switch (h.typeflag) {
    case "0":
      return "reg";
    case "1":
      return "hardlink";
    case "2":
      return "symlink";
    case "3":
      return "char";
    case "4":
      return "block";
    case "5":
      return "dir";
    case "6":
      return "fifo";
    default:
      throw new TarError(`unsupported tar entry type ${JSON.stringify(h.typeflag)} for ${name}`);
  }
}

/** A landmark entry, with the header Go's `estargz.Build` writes (mode 0, mtime 0, root). */
function landmark(name: string): SourceEntry {
  let given = false;
  return {
    header: {
      name,
      linkName: "",
      typeflag: "0",
      mode: 0,
      uid: 0,
      gid: 0,
      size: 1,
      mtimeMs: 0,
      userName: "",
      groupName: "",
      devMajor: 0,
      devMinor: 0,
      xattrs: new Map(),
    },
    raw: ustarFileHeader(name, 1, { mode: 0 }),
    ownMember: true,
    read() {
      if (given) return Promise.resolve(undefined);
      given = true;
      return Promise.resolve(LANDMARK_CONTENT);
    },
  };
}

/** Entries the converter drops from its input: an old TOC and old landmarks. */
function isReserved(h: TarHeader): boolean {
  let n: string;
  try {
    n = cleanEntryName(h.name);
  } catch {
    return false;
  }
  return n === TOC_TAR_NAME || n === PREFETCH_LANDMARK || n === NO_PREFETCH_LANDMARK;
}

interface SpilledEntry {
  header: TarHeader;
  name: string;
  raw: Uint8Array;
  dataOffset: number;
}

/** Reads the whole input into a temp file, keeping headers in memory, for reordering. */
async function spill(tr: TarReader, file: string): Promise<SpilledEntry[]> {
  const fh = await fsp.open(file, "w");
  const list: SpilledEntry[] = [];
  let pos = 0;
  try {
    for (;;) {
      const e = await tr.next();
      if (!e) break;
      if (isReserved(e.header)) continue;
      list.push({
        header: e.header,
        name: cleanEntryName(e.header.name),
        raw: e.raw,
        dataOffset: pos,
      });
      for (;;) {
        const part = await tr.readData(READ_SIZE);
        if (!part) break;
        let done = 0;
        while (done < part.length) {
          done += (await fh.write(part, done, part.length - done, pos + done)).bytesWritten;
        }
        pos += part.length;
      }
    }
  } finally {
    await fh.close();
  }
  return list;
}

/** Orders spilled entries: prioritized names (with parents and hardlink targets) first. */
function prioritize(
  list: SpilledEntry[],
  prioritized: readonly string[],
): { first: SpilledEntry[]; rest: SpilledEntry[]; missed: string[] } {
  const byName = new Map<string, SpilledEntry[]>();
  for (const e of list) {
    const l = byName.get(e.name);
    if (l) l.push(e);
    else byName.set(e.name, [e]);
  }
  const moved = new Set<SpilledEntry>();
  const first: SpilledEntry[] = [];
  const missed: string[] = [];
  const move = (name: string, depth: number): boolean => {
    if (depth > 256) return false;
    if (name !== "") {
      const slash = name.lastIndexOf("/");
      move(slash < 0 ? "" : name.slice(0, slash), depth + 1);
    }
    const es = byName.get(name);
    if (!es) return false;
    for (const e of es) {
      if (moved.has(e)) continue;
      if (e.header.typeflag === "1") {
        try {
          move(cleanEntryName(e.header.linkName), depth + 1);
        } catch {
          // Reported when the entry itself is converted.
        }
      }
      moved.add(e);
      first.push(e);
    }
    return true;
  };
  for (const p of prioritized) {
    let name: string;
    try {
      name = cleanEntryName(p);
    } catch {
      missed.push(p);
      continue;
    }
    if (!move(name, 0)) missed.push(p);
  }
  return { first, rest: list.filter((e) => !moved.has(e)), missed };
}

function spilledSource(fh: fsp.FileHandle, e: SpilledEntry): SourceEntry {
  let pos = e.dataOffset;
  const end = e.dataOffset + (e.header.typeflag === "0" ? e.header.size : 0);
  return {
    header: e.header,
    raw: e.raw,
    async read(max: number): Promise<Uint8Array | undefined> {
      if (pos >= end) return undefined;
      const n = Math.min(max, end - pos);
      const buf = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(buf, got, n - got, pos + got);
        if (bytesRead === 0) throw new TarError("spill file ended early");
        got += bytesRead;
      }
      pos += n;
      return buf;
    },
  };
}

/**
 * Converts one layer to eStargz (or zstd:chunked) at `output`. The output is a valid tar.gz
 * (tar.zst) holding every input entry byte for byte, plus the landmark and the TOC.
 */
export async function convertLayer(
  input: LayerSource,
  output: BlobSink,
  opts: ConvertOptions = {},
): Promise<ConvertResult> {
  const kind = opts.format ?? "gzip";
  const level = opts.level ?? (kind === "zstd" ? 3 : 9);
  const chunkSize = opts.chunkSize && opts.chunkSize > 0 ? opts.chunkSize : DEFAULT_CHUNK_SIZE;
  const src = await decompressed(input);
  const tr = new TarReader(src);
  const pool = new CompressorPool(kind, level, opts.workers);
  const out = await BlobOutput.open(output);
  let spillDir: string | undefined;
  try {
    const w = new LayerWriter(out, pool, chunkSize, opts.minChunkSize ?? 0);
    let missed: string[] = [];
    if (opts.prioritizedFiles && opts.prioritizedFiles.length > 0) {
      spillDir = await fsp.mkdtemp(path.join(opts.tmpDir ?? os.tmpdir(), "stargz-convert-"));
      const spillFile = path.join(spillDir, "payloads");
      const list = await spill(tr, spillFile);
      const order = prioritize(list, opts.prioritizedFiles);
      missed = order.missed;
      const fh = await fsp.open(spillFile, "r");
      try {
        for (const e of order.first) await w.add(spilledSource(fh, e));
        await w.add(landmark(PREFETCH_LANDMARK));
        for (const e of order.rest) await w.add(spilledSource(fh, e));
      } finally {
        await fh.close();
      }
    } else {
      await w.add(landmark(NO_PREFETCH_LANDMARK));
      for (;;) {
        const e = await tr.next();
        if (!e) break;
        if (isReserved(e.header)) continue;
        await w.add({ header: e.header, raw: e.raw, read: (max) => tr.readData(max) });
      }
    }
    if (kind === "zstd") {
      // zstd:chunked keeps the TOC out of the tar, so the end-of-archive blocks get their own
      // frame: the decompressed blob is then a complete tar.
      await w.flush();
      w.addRaw(new Uint8Array(2 * BLOCK));
    }
    await w.flush();
    w.resolveOffsets();
    const toc = { version: 1 as const, entries: w.entries };
    EstargzBlob.checkToc(toc, kind, out.size);
    const json = encodeToc(toc);
    const tocDigest = "sha256:" + createHash("sha256").update(json).digest("hex");
    const dataEnd = out.size;
    if (kind === "gzip") {
      const tocTar = concat([
        ustarFileHeader(TOC_TAR_NAME, json.length),
        json,
        padding(json.length),
        new Uint8Array(2 * BLOCK),
      ]);
      w.diffHash.update(tocTar);
      w.uncompressedSize += tocTar.length;
      await out.write(compressMember("gzip", level, tocTar));
      await out.write(encodeGzipFooter(dataEnd));
    } else {
      const compressed = compressMember("zstd", level, json);
      const frameHeader = new Uint8Array(8);
      frameHeader.set(ZSTD_SKIPPABLE_MAGIC, 0);
      new DataView(frameHeader.buffer).setUint32(4, compressed.length, true);
      await out.write(frameHeader);
      await out.write(compressed);
      await out.write(encodeZstdFooterFrame(dataEnd + 8, compressed.length, json.length));
    }
    await out.flush();
    return {
      digest: "sha256:" + out.hash.digest("hex"),
      size: out.size,
      diffID: "sha256:" + w.diffHash.digest("hex"),
      tocDigest,
      uncompressedSize: w.uncompressedSize,
      missedPrioritizedFiles: missed,
    };
  } catch (err) {
    // A half-written blob at the destination would look like a layer; do not leave one.
    if (typeof output === "string") {
      await out.close();
      await fsp.rm(output, { force: true });
    }
    throw err;
  } finally {
    pool.close();
    await out.close();
    await src.close();
    if (spillDir) await fsp.rm(spillDir, { recursive: true, force: true });
  }
}
