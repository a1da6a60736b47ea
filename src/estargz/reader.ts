/**
 * Opening an eStargz / zstd:chunked blob through any random-access {@link BlobReader}: footer,
 * TOC (digest-checked), and an index built for the lazy filesystem's hot path.
 */
import { createHash } from "node:crypto";
import * as fsp from "node:fs/promises";
import { setImmediate } from "node:timers";
import * as zlib from "node:zlib";
import {
  ChunkDecodeError,
  ChunkDigestMismatchError,
  type EstargzError,
  FooterError,
  InvalidEntryError,
  OutOfRangeError,
  TocDigestMismatchError,
  TocError,
} from "./errors.ts";
import { type BlobFormat, type Footer, MAX_FOOTER_SIZE, parseFooter } from "./footer.ts";
import { BLOCK } from "./_tar.ts";
import {
  cleanEntryName,
  decodeToc,
  parseModtime,
  type Toc,
  TOC_TAR_NAME,
  type TocEntry,
} from "./toc.ts";

/** Random access to the bytes of one blob (a local file, a registry blob, a cache). */
export interface BlobReader {
  readonly size: number;
  /** Exactly `length` bytes starting at `offset` (rejects when the range is not available). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** A {@link BlobReader} over a local file; close it when done. */
export async function fileBlobReader(
  path: string,
): Promise<BlobReader & { close(): Promise<void> }> {
  const fh = await fsp.open(path, "r");
  const { size } = await fh.stat();
  return {
    size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new RangeError(`read ${offset}+${length} outside file of ${size} bytes`);
      }
      const buf = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) throw new RangeError(`short read at ${offset + got} in ${path}`);
        got += bytesRead;
      }
      return buf;
    },
    close: () => fh.close(),
  };
}

/** The kinds of node in the index (hardlinks are resolved to their target). */
export type NodeType = "dir" | "reg" | "symlink" | "char" | "block" | "fifo";

/** One chunk of a regular file, with the compressed extent that holds it. */
export interface Chunk {
  /** Cleaned path of the file (for hardlinked files: the first name). */
  readonly path: string;
  /** Offset in the file's content. */
  readonly chunkOffset: number;
  /** Uncompressed length of the chunk. */
  readonly chunkSize: number;
  /** `sha256:…` of the chunk's bytes (absent in blobs that predate eStargz). */
  readonly chunkDigest: string | undefined;
  /** Start of the gzip member / zstd frame holding the chunk (the TOC `offset`). */
  readonly compressedOffset: number;
  /** End of that extent: the next distinct payload offset, or the end of the data region. */
  readonly compressedEnd: number;
  /** Where the chunk starts inside the decompressed member (`innerOffset`). */
  readonly innerOffset: number;
}

/** A file, directory or other node of the layer, as the filesystem serves it. */
export interface EstargzNode {
  /** Cleaned path ("" for the root). */
  readonly name: string;
  readonly type: NodeType;
  /**
   * The entry's xattrs as the TOC stores them (base64 values; `decodeXattrs` decodes them),
   * undefined when it has none. The TOC entry itself is not kept: 100k of them cost tens of MB.
   */
  readonly xattrs: Readonly<Record<string, string>> | undefined;
  /** Where the entry's payload starts in the blob (the TOC `offset`; 0 without one). */
  readonly offset: number;
  readonly size: number;
  /** Permission and mode bits as stored in the TOC. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly modtimeMs: number;
  readonly linkName: string;
  readonly devMajor: number;
  readonly devMinor: number;
  /**
   * Owner names. Writers store a name only when it changes for that id (Go's `nameIfChanged`),
   * so the index fills the gaps from earlier entries, as Go's reader does.
   */
  readonly userName: string;
  readonly groupName: string;
  /** Number of names that reach this node (directories: 2 + subdirectories). */
  readonly numLink: number;
}

interface MutableNode extends EstargzNode {
  numLink: number;
  userName: string;
  groupName: string;
  chunks: Chunk[] | undefined;
  children: Map<string, MutableNode> | undefined;
}

/** Options of {@link openBlob}. */
export interface OpenOptions {
  /** Refuse the blob unless its TOC digest equals this (`sha256:…`). */
  expectedTocDigest?: string;
  /** How many tail bytes to fetch first (covers small TOCs in one request); default 64 KiB. */
  tailSize?: number;
  /**
   * The blob's last bytes, already at hand (the read that located a registry blob): footer and
   * TOC come from them, and only the part of a TOC that starts before them is read.
   */
  tail?: Uint8Array;
}

/** How much more than its chunk one extent may inflate to (see {@link decodeChunk}). */
const MAX_TRAILING_HEADERS = 64 << 20;
/**
 * Largest chunk (inner offset plus size) a TOC may describe: one chunk is decompressed whole in
 * memory. Writers cut files into 4 MiB chunks by default (upstream and ours); this leaves room
 * for `--chunk-size` far beyond that and for old blobs with larger chunks.
 */
export const MAX_CHUNK_BYTES = 256 << 20;
/**
 * Largest decompressed TOC (tar header and JSON). A TOC entry takes 150 to 400 bytes, so this
 * holds about a million entries, the {@link MAX_TOC_ENTRIES} limit.
 */
export const MAX_TOC_BYTES = 512 << 20;
const EMPTY_CHILDREN: ReadonlyMap<string, EstargzNode> = new Map();
const NO_CHUNKS: readonly Chunk[] = [];

function sha256(b: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(b).digest("hex");
}

function nodeFromEntry(e: TocEntry, name: string, type: NodeType): MutableNode {
  return {
    name,
    type,
    xattrs: e.xattrs && Object.keys(e.xattrs).length > 0 ? e.xattrs : undefined,
    offset: e.offset ?? 0,
    size: e.size ?? 0,
    mode: e.mode ?? 0,
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    modtimeMs: parseModtime(e.modtime),
    linkName: e.linkName ?? "",
    devMajor: e.devMajor ?? 0,
    devMinor: e.devMinor ?? 0,
    userName: e.userName ?? "",
    groupName: e.groupName ?? "",
    // A directory's own "." link; its name in the parent adds the second.
    numLink: type === "dir" ? 1 : 0,
    chunks: undefined,
    children: undefined,
  };
}

function impliedDir(name: string): MutableNode {
  return {
    name,
    type: "dir",
    xattrs: undefined,
    offset: 0,
    size: 0,
    mode: 0o755,
    uid: 0,
    gid: 0,
    modtimeMs: 0,
    linkName: "",
    devMajor: 0,
    devMinor: 0,
    userName: "",
    groupName: "",
    numLink: 2,
    chunks: undefined,
    children: undefined,
  };
}

function parentOf(p: string): string {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

/** An opened blob: the TOC, its digest, and the index the filesystem reads from. */
export class EstargzBlob {
  readonly #nodes = new Map<string, MutableNode>();

  private constructor(
    readonly reader: BlobReader,
    readonly format: BlobFormat,
    readonly footer: Footer,
    readonly tocDigest: string,
  ) {}

  /** Where the data region ends: chunk extents never reach past it. */
  get tocOffset(): number {
    return this.footer.dataEnd;
  }

  /** @internal Use {@link openBlob}. */
  static async open(reader: BlobReader, opts: OpenOptions = {}): Promise<EstargzBlob> {
    const size = reader.size;
    if (size < 40) throw new FooterError(`blob of ${size} bytes is smaller than any footer`);
    const given = opts.tail;
    const tailLen = Math.min(size, Math.max(opts.tailSize ?? 65536, MAX_FOOTER_SIZE));
    const tail = given && given.length <= size && given.length >= Math.min(size, MAX_FOOTER_SIZE)
      ? given
      : await reader.read(size - tailLen, tailLen);
    const footer = parseFooter(tail, size);
    const [tocStart, tocEnd] = tocRange(footer, size);
    const tailStart = size - tail.length;
    let tocBytes: Uint8Array;
    if (tocStart >= tailStart) tocBytes = tail.subarray(tocStart - tailStart, tocEnd - tailStart);
    else if (tocEnd <= tailStart) tocBytes = await reader.read(tocStart, tocEnd - tocStart);
    else {
      // A TOC larger than the tail: read only what the tail lacks.
      const head = await reader.read(tocStart, tailStart - tocStart);
      tocBytes = new Uint8Array(tocEnd - tocStart);
      tocBytes.set(head, 0);
      tocBytes.set(tail.subarray(0, tocEnd - tailStart), head.length);
    }
    const json = footer.format === "zstd" ? zstdToc(tocBytes) : gzipToc(tocBytes);
    const digest = sha256(json);
    if (opts.expectedTocDigest !== undefined && opts.expectedTocDigest !== digest) {
      throw new TocDigestMismatchError(opts.expectedTocDigest, digest);
    }
    const blob = new EstargzBlob(reader, footer.format, footer, digest);
    const toc = decodeToc(json);
    // Parsing and indexing a large TOC take a while each: let the event loop run in between.
    await new Promise((resolve) => setImmediate(resolve));
    // The parsed TOC is garbage once indexed: the index keeps what the filesystem serves.
    blob.#buildIndex(toc);
    return blob;
  }

  /**
   * Builds the index of `toc` as {@link open} would, without a blob: the converter's check that
   * what it writes opens (a tar may hold a hardlink to a name it lacks, or a file where a later
   * entry needs a directory). Throws the error opening the blob would.
   */
  static checkToc(toc: Toc, format: BlobFormat, dataEnd: number): void {
    const footer: Footer = { format, footerSize: 0, tocOffset: dataEnd, dataEnd };
    const none: BlobReader = { size: 0, read: () => Promise.reject(new Error("no blob")) };
    new EstargzBlob(none, format, footer, "").#buildIndex(toc);
  }

  /**
   * Reads and decodes the TOC again (it is not kept after indexing), checked against the digest
   * it had when the blob was opened.
   */
  async readToc(): Promise<Toc> {
    const [start, end] = tocRange(this.footer, this.reader.size);
    const bytes = await this.reader.read(start, end - start);
    const json = this.format === "zstd" ? zstdToc(bytes) : gzipToc(bytes);
    const digest = sha256(json);
    if (digest !== this.tocDigest) throw new TocDigestMismatchError(this.tocDigest, digest);
    return decodeToc(json);
  }

  #dir(name: string): MutableNode {
    const found = this.#nodes.get(name);
    if (found) {
      if (found.type !== "dir") {
        throw new InvalidEntryError(name, "used as a parent directory but is not a directory");
      }
      return found;
    }
    const d = impliedDir(name);
    this.#nodes.set(name, d);
    if (name !== "") this.#attach(name, d);
    return d;
  }

  #attach(name: string, node: MutableNode): void {
    const parent = this.#dir(parentOf(name));
    const children = parent.children ??= new Map();
    const base = name.slice(name.lastIndexOf("/") + 1);
    const prev = children.get(base);
    if (prev?.type === "dir") parent.numLink--;
    if (node.type === "dir") parent.numLink++;
    children.set(base, node);
  }

  #buildIndex(toc: Toc): void {
    const entries = toc.entries;
    const dataEnd = this.footer.dataEnd;
    const order: MutableNode[] = [];
    const hardlinks: [MutableNode, TocEntry][] = [];
    const all: { c: Chunk; e: TocEntry }[] = [];
    let lastReg: MutableNode | undefined;
    const userNames = new Map<number, string>();
    const groupNames = new Map<number, string>();
    for (const e of entries) {
      if (e.type === "chunk") {
        if (!lastReg) throw new InvalidEntryError(e.name, "chunk entry without a preceding file");
        this.#addChunk(lastReg, e, all, dataEnd);
        continue;
      }
      const name = cleanEntryName(e.name);
      if (e.type === "hardlink") {
        const node = nodeFromEntry(e, name, "reg");
        hardlinks.push([node, e]);
        order.push(node);
        this.#nodes.set(name, node);
        lastReg = undefined;
        continue;
      }
      const node = nodeFromEntry(e, name, e.type);
      if (node.userName) userNames.set(node.uid, node.userName);
      else node.userName = userNames.get(node.uid) ?? "";
      if (node.groupName) groupNames.set(node.gid, node.groupName);
      else node.groupName = groupNames.get(node.gid) ?? "";
      order.push(node);
      // A name given twice: the later entry wins, as when the tar is extracted.
      this.#nodes.set(name, node);
      if (e.type === "reg") {
        lastReg = node;
        if ((e.size ?? 0) > 0) this.#addChunk(node, e, all, dataEnd);
      } else {
        lastReg = undefined;
      }
    }
    const root = this.#nodes.get("");
    if (!root) this.#nodes.set("", impliedDir(""));
    else if (root.type !== "dir") throw new InvalidEntryError(root.name, "root is not a directory");
    else root.numLink++;

    // Hardlinks point at whatever their target name finally holds; chains are followed.
    const linkNodes = new Set(hardlinks.map(([n]) => n));
    const targets = new Map<MutableNode, MutableNode>();
    for (const [node, e] of hardlinks) {
      let target = node;
      for (let depth = 0; linkNodes.has(target); depth++) {
        const link = target.linkName;
        const next = this.#nodes.get(cleanEntryNameFor(e.name, link));
        if (!next) {
          throw new InvalidEntryError(e.name, `hardlink target ${JSON.stringify(link)} not found`);
        }
        if (depth > 64) throw new InvalidEntryError(e.name, "hardlink loop");
        target = next;
      }
      if (target.type === "dir") throw new InvalidEntryError(e.name, "hardlink to a directory");
      targets.set(node, target);
    }

    for (const node of order) {
      if (node.name === "" || this.#nodes.get(node.name) !== node) continue;
      const target = targets.get(node) ?? node;
      target.numLink++;
      if (target !== node) this.#nodes.set(node.name, target);
      this.#attach(node.name, target);
    }

    this.#computeExtents(all, dataEnd);
    for (const node of order) {
      const chunks = node.chunks;
      if (!chunks) continue;
      if (chunks.length > 1) chunks.sort((a, b) => a.chunkOffset - b.chunkOffset);
      let next = 0;
      for (const c of chunks) {
        if (c.chunkOffset !== next) {
          throw new InvalidEntryError(node.name, `chunks do not cover the file at ${next}`);
        }
        next += c.chunkSize;
      }
      if (next !== node.size) {
        throw new InvalidEntryError(node.name, `chunks cover ${next} of ${node.size} bytes`);
      }
    }
  }

  #addChunk(
    node: MutableNode,
    e: TocEntry,
    all: { c: Chunk; e: TocEntry }[],
    dataEnd: number,
  ): void {
    const chunkOffset = e.chunkOffset ?? 0;
    const chunkSize = e.chunkSize || node.size - chunkOffset;
    const offset = e.offset ?? 0;
    if (chunkOffset + chunkSize > node.size || chunkSize <= 0) {
      throw new InvalidEntryError(node.name, `chunk ${chunkOffset}+${chunkSize} outside the file`);
    }
    if ((e.innerOffset ?? 0) + chunkSize > MAX_CHUNK_BYTES) {
      throw new InvalidEntryError(
        node.name,
        `chunk of ${chunkSize} bytes exceeds ${MAX_CHUNK_BYTES}`,
      );
    }
    if (offset >= dataEnd) {
      throw new OutOfRangeError(
        node.name,
        `TOC entry ${
          JSON.stringify(node.name)
        } points at ${offset}, past the data region (${dataEnd})`,
      );
    }
    const c = {
      path: node.name,
      chunkOffset,
      chunkSize,
      chunkDigest: e.chunkDigest || undefined,
      compressedOffset: offset,
      compressedEnd: dataEnd,
      innerOffset: e.innerOffset ?? 0,
    };
    (node.chunks ??= []).push(c);
    all.push({ c, e });
  }

  #computeExtents(all: { c: Chunk; e: TocEntry }[], dataEnd: number): void {
    let sorted = true;
    for (let i = 1; i < all.length; i++) {
      if (all[i].c.compressedOffset < all[i - 1].c.compressedOffset) {
        sorted = false;
        break;
      }
    }
    const list = sorted
      ? all
      : [...all].sort((a, b) => a.c.compressedOffset - b.c.compressedOffset);
    let end = dataEnd;
    for (let i = list.length - 1; i >= 0; i--) {
      const c = list[i].c as { compressedEnd: number; compressedOffset: number };
      c.compressedEnd = end;
      if (i > 0 && list[i - 1].c.compressedOffset !== c.compressedOffset) end = c.compressedOffset;
    }
  }

  /** The node at `path` (any spelling that cleans to it); hardlinks resolve to their target. */
  entry(path: string): EstargzNode | undefined {
    const n = this.#nodes.get(path);
    if (n) return n;
    try {
      return this.#nodes.get(cleanEntryName(path));
    } catch {
      return undefined;
    }
  }

  /** The root directory. */
  root(): EstargzNode {
    return this.#nodes.get("") as MutableNode;
  }

  #node(at: string | EstargzNode): MutableNode | undefined {
    return (typeof at === "string" ? this.entry(at) : at) as MutableNode | undefined;
  }

  /**
   * A directory's children by base name, in TOC order. Takes a path or, cheaper on the
   * filesystem's hot path, a node this blob returned.
   */
  children(dir: string | EstargzNode): ReadonlyMap<string, EstargzNode> {
    return this.#node(dir)?.children ?? EMPTY_CHILDREN;
  }

  /** A regular file's chunks sorted by `chunkOffset` (empty for empty files). */
  chunks(file: string | EstargzNode): readonly Chunk[] {
    return this.#node(file)?.chunks ?? NO_CHUNKS;
  }

  /** The chunk of `file` that holds byte `offset` of its content. */
  chunkAt(file: string | EstargzNode, offset: number): Chunk | undefined {
    const list = this.chunks(file);
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = list[mid];
      if (offset < c.chunkOffset) hi = mid - 1;
      else if (offset >= c.chunkOffset + c.chunkSize) lo = mid + 1;
      else return c;
    }
    return undefined;
  }

  /** Every node of the index by path (hardlink names map to their target). */
  nodes(): IterableIterator<[string, EstargzNode]> {
    return this.#nodes.entries();
  }

  /** Decompresses one chunk from its compressed extent and checks its digest. Pure. */
  decodeChunk(chunk: Chunk, compressed: Uint8Array): Uint8Array {
    return decodeChunk(this.format, chunk, compressed);
  }

  /** {@link decodeChunk} off the event loop (see {@link decodeChunkAsync}). */
  decodeChunkAsync(chunk: Chunk, compressed: Uint8Array): Promise<Uint8Array> {
    return decodeChunkAsync(this.format, chunk, compressed);
  }

  /**
   * Decompresses one member once for all the `chunks` it holds (they share one
   * `compressedOffset`) and verifies each; a chunk that fails gets its error in its place, so a
   * bad chunk does not take its neighbours with it.
   */
  decodeMemberAsync(
    chunks: readonly Chunk[],
    compressed: Uint8Array,
  ): Promise<(Uint8Array | EstargzError)[]> {
    return decodeMemberAsync(this.format, chunks, compressed);
  }

  /** Fetches, decompresses and verifies one chunk. */
  async readChunk(chunk: Chunk): Promise<Uint8Array> {
    const bytes = await this.reader.read(
      chunk.compressedOffset,
      chunk.compressedEnd - chunk.compressedOffset,
    );
    return decodeChunk(this.format, chunk, bytes);
  }

  /** Reads and verifies every chunk in blob order; throws the first mismatch. */
  async verifyAll(): Promise<number> {
    const seen = new Set<Chunk>();
    const list: Chunk[] = [];
    for (const n of this.#nodes.values()) {
      for (const c of (n as MutableNode).chunks ?? NO_CHUNKS) {
        if (!seen.has(c)) {
          seen.add(c);
          list.push(c);
        }
      }
    }
    list.sort((a, b) => a.compressedOffset - b.compressedOffset || a.innerOffset - b.innerOffset);
    for (const c of list) await this.readChunk(c);
    return list.length;
  }
}

function cleanEntryNameFor(entryName: string, link: string): string {
  try {
    return cleanEntryName(link);
  } catch {
    throw new InvalidEntryError(
      entryName,
      `hardlink target ${JSON.stringify(link)} escapes the root`,
    );
  }
}

/**
 * Decompresses the chunk from `compressed` (the bytes of its extent
 * `[compressedOffset, compressedEnd)`, or any prefix of it that holds the whole member) and
 * verifies it against `chunkDigest`. Pure: safe to call on bytes fetched in a batch.
 */
export function decodeChunk(format: BlobFormat, chunk: Chunk, compressed: Uint8Array): Uint8Array {
  let out: Uint8Array;
  try {
    out = format === "zstd"
      ? zlib.zstdDecompressSync(compressed, inflateOptions(chunk, format))
      : zlib.gunzipSync(compressed, inflateOptions(chunk, format));
  } catch (err) {
    throw new ChunkDecodeError(chunk.path, chunk.chunkOffset, (err as Error).message);
  }
  return checkChunk(chunk, out);
}

/**
 * {@link decodeChunk} with the decompression on the runtime's thread pool, so that a server
 * decoding large chunks keeps answering other requests (and uses every core).
 */
export function decodeChunkAsync(
  format: BlobFormat,
  chunk: Chunk,
  compressed: Uint8Array,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, out: Uint8Array) => {
      if (err) reject(new ChunkDecodeError(chunk.path, chunk.chunkOffset, err.message));
      else {
        try {
          resolve(checkChunk(chunk, out));
        } catch (checkErr) {
          reject(checkErr);
        }
      }
    };
    if (format === "zstd") zlib.zstdDecompress(compressed, inflateOptions(chunk, format), done);
    else zlib.gunzip(compressed, inflateOptions(chunk, format), done);
  });
}

/** {@link EstargzBlob.decodeMemberAsync}: one inflate of a member for all its chunks. */
export function decodeMemberAsync(
  format: BlobFormat,
  chunks: readonly Chunk[],
  compressed: Uint8Array,
): Promise<(Uint8Array | EstargzError)[]> {
  if (chunks.length === 0) return Promise.resolve([]);
  // The chunk that ends last bounds what the member may inflate to.
  const last = chunks.reduce((a, c) =>
    c.innerOffset + c.chunkSize > a.innerOffset + a.chunkSize ? c : a
  );
  return new Promise((resolve) => {
    const done = (err: Error | null, out: Uint8Array) => {
      resolve(chunks.map((c) => {
        if (err) return new ChunkDecodeError(c.path, c.chunkOffset, err.message);
        try {
          return checkChunk(c, out);
        } catch (checkErr) {
          return checkErr as EstargzError;
        }
      }));
    };
    if (format === "zstd") zlib.zstdDecompress(compressed, inflateOptions(last, format), done);
    else zlib.gunzip(compressed, inflateOptions(last, format), done);
  });
}

function inflateOptions(chunk: Chunk, format: BlobFormat): zlib.ZlibOptions & zlib.ZstdOptions {
  // Bytes fetched from a registry are not trusted until their digest is checked: cap what an
  // extent may inflate to. Beyond the chunk a member holds only tar headers of the entries that
  // follow (our writer starts a new member after chunkSize of them).
  const maxOutputLength = chunk.innerOffset + chunk.chunkSize + MAX_TRAILING_HEADERS;
  // One output buffer the size of what is needed: with the default 16 KiB buffers the async
  // inflate returns to the event loop per buffer and joins them at the end, which made a 4 MiB
  // chunk take twice as long (30-60 ms instead of 16 ms on Bun).
  const chunkSize = Math.max(zlib.constants.Z_DEFAULT_CHUNK, chunk.innerOffset + chunk.chunkSize);
  return format === "zstd"
    ? { maxOutputLength, chunkSize }
    : { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength, chunkSize };
}

/** The chunk's bytes out of its decompressed member, verified against `chunkDigest`. */
function checkChunk(chunk: Chunk, out: Uint8Array): Uint8Array {
  const want = chunk.innerOffset + chunk.chunkSize;
  if (out.length < want) {
    throw new ChunkDecodeError(
      chunk.path,
      chunk.chunkOffset,
      `member holds ${out.length} bytes, need ${want}`,
    );
  }
  const data = out.subarray(chunk.innerOffset, want);
  if (chunk.chunkDigest !== undefined) {
    const got = sha256(data);
    if (got !== chunk.chunkDigest) {
      throw new ChunkDigestMismatchError(chunk.path, chunk.chunkOffset, chunk.chunkDigest, got);
    }
  }
  return data;
}

/** `[start, end)` of the compressed TOC in a blob of `size` bytes. */
function tocRange(footer: Footer, size: number): [number, number] {
  const start = footer.tocOffset;
  const end = footer.format === "zstd"
    ? start + (footer.tocCompressedSize ?? 0)
    : size - footer.footerSize;
  if (end <= start) throw new TocError(`empty TOC region at ${start}`);
  return [start, end];
}

function gzipToc(compressed: Uint8Array): Uint8Array {
  let tar: Uint8Array;
  try {
    tar = zlib.gunzipSync(compressed, { maxOutputLength: MAX_TOC_BYTES });
  } catch (err) {
    throw new TocError(`malformed TOC gzip stream: ${(err as Error).message}`, { cause: err });
  }
  if (tar.length < BLOCK) throw new TocError("TOC gzip stream holds no tar header");
  const name = new TextDecoder().decode(tar.subarray(0, 100)).replace(/\0.*$/s, "");
  if (name !== TOC_TAR_NAME) {
    throw new TocError(`TOC tar entry had name ${JSON.stringify(name)}; expected ${TOC_TAR_NAME}`);
  }
  const size = parseInt(new TextDecoder().decode(tar.subarray(124, 136)).replace(/\0.*$/s, ""), 8);
  if (!Number.isSafeInteger(size) || BLOCK + size > tar.length) {
    throw new TocError("TOC tar entry size is invalid");
  }
  return tar.subarray(BLOCK, BLOCK + size);
}

function zstdToc(compressed: Uint8Array): Uint8Array {
  try {
    return zlib.zstdDecompressSync(compressed, { maxOutputLength: MAX_TOC_BYTES });
  } catch (err) {
    throw new TocError(`malformed zstd TOC: ${(err as Error).message}`, { cause: err });
  }
}

/** Opens a blob: footer, TOC (checked against `expectedTocDigest` when given), index. */
export function openBlob(reader: BlobReader, opts?: OpenOptions): Promise<EstargzBlob> {
  return EstargzBlob.open(reader, opts);
}
