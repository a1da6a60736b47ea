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
  decodeTocSteps,
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

/** One compressed member (gzip member / zstd frame) of the blob and the chunks it holds. */
export interface Member {
  /** The chunks' `compressedOffset`. */
  readonly start: number;
  /** Their `compressedEnd`. */
  readonly end: number;
  readonly chunks: readonly Chunk[];
  /** Position in {@link CompactIndex.members}. */
  readonly index: number;
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

/** The node types in the order of {@link CompactIndex.type}'s codes. */
export const NODE_TYPES: readonly NodeType[] = ["dir", "reg", "symlink", "char", "block", "fifo"];

/**
 * The index of an opened blob in one structure, built once from the TOC: a column per field
 * (node `k` is row `k`; node 0 is the root), every directory's entries as runs of (name, node)
 * edges in TOC order, and every regular file's chunks as a run of one flat list. Rare fields
 * (link targets, xattrs) are sparse, owner names index a table of the distinct ones. A 100k-entry
 * layer's nodes cost about 10 MB here (paths included) where one object per node and a Map per
 * directory cost about 30 MB. The filesystem's tree reads these columns directly.
 */
export interface CompactIndex {
  /** Number of nodes. */
  readonly count: number;
  /** Cleaned path of each node (hardlinked files: their first name). */
  readonly name: readonly string[];
  /** Index in {@link NODE_TYPES}. */
  readonly type: Uint8Array;
  readonly mode: Uint32Array;
  readonly uid: Uint32Array;
  readonly gid: Uint32Array;
  readonly devMajor: Uint32Array;
  readonly devMinor: Uint32Array;
  readonly numLink: Uint32Array;
  readonly size: Float64Array;
  readonly offset: Float64Array;
  readonly modtimeMs: Float64Array;
  /** Indices into {@link owners}. */
  readonly userName: Uint32Array;
  readonly groupName: Uint32Array;
  readonly owners: readonly string[];
  /** Symlink targets, for the nodes that have one. */
  readonly linkName: ReadonlyMap<number, string>;
  /** The TOC's xattrs (base64 values) of the nodes that have any. */
  readonly xattrs: ReadonlyMap<number, Readonly<Record<string, string>>>;
  /** A directory's entries: `edgeCount[k]` edges from `edgeStart[k]`. */
  readonly edgeStart: Uint32Array;
  readonly edgeCount: Uint32Array;
  readonly edgeName: readonly string[];
  readonly edgeNode: Uint32Array;
  /** A regular file's chunks, by `chunkOffset`: `chunkCount[k]` from `chunkStart[k]`. */
  readonly chunkStart: Uint32Array;
  readonly chunkCount: Uint32Array;
  readonly chunks: readonly Chunk[];
  /** Node of every path (hardlink names map to their target). */
  readonly byPath: ReadonlyMap<string, number>;
  /** The compressed members that hold chunks, sorted by offset in the blob. */
  readonly members: readonly Member[];
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
/** Longest run of work on the event loop while a blob is opened (see {@link inSlices}). */
const SLICE_MS = 10;
/** Loop iterations between two checks of the clock in the index's build. */
const STEP = 1024;
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
  /** The nodes while the index is built; empty afterwards. */
  readonly #nodes = new Map<string, MutableNode>();
  #index: CompactIndex = EMPTY_INDEX;
  /** Nodes and listings handed out by {@link entry} and {@link children}, made on demand. */
  readonly #views: (EstargzNode | undefined)[] = [];
  readonly #listings = new Map<number, ReadonlyMap<string, EstargzNode>>();

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
    // A large TOC takes a while to inflate, hash, parse and index: every step runs off the
    // event loop or in slices, so that mounting it does not stall the layers already served.
    let json: Uint8Array | undefined = await inflateToc(footer.format, tocBytes);
    const digest = await inSlices(sha256Steps(json));
    if (opts.expectedTocDigest !== undefined && opts.expectedTocDigest !== digest) {
      throw new TocDigestMismatchError(opts.expectedTocDigest, digest);
    }
    const blob = new EstargzBlob(reader, footer.format, footer, digest);
    // Entries go into the index as they are parsed, a few hundred at a time, and are garbage
    // right after: the whole parsed TOC never exists at once.
    let build = newBuild();
    const add = (entries: TocEntry[]) => {
      const steps = blob.#addEntries(build, entries);
      while (!steps.next().done) { /* one batch */ }
    };
    const parse = decodeTocSteps(json, add);
    // The parse keeps only the text of the JSON: its bytes (and the inflated tar) can go.
    json = undefined;
    const whole = await inSlices(parse);
    if (whole) {
      // Laid out in a way the parse in runs does not take: index the TOC decoded whole.
      blob.#nodes.clear();
      build = newBuild();
      await inSlices(blob.#addEntries(build, whole.entries));
    }
    await inSlices(blob.#finishIndex(build));
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
    const steps = new EstargzBlob(none, format, footer, "").#indexSteps(toc);
    while (!steps.next().done) { /* at once */ }
  }

  /**
   * Reads and decodes the TOC again (it is not kept after indexing), checked against the digest
   * it had when the blob was opened.
   */
  async readToc(): Promise<Toc> {
    const [start, end] = tocRange(this.footer, this.reader.size);
    const bytes = await this.reader.read(start, end - start);
    const json = await inflateToc(this.format, bytes);
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

  /** Builds the index of `toc`, yielding every so many entries (see {@link inSlices}). */
  *#indexSteps(toc: Toc): Generator<void, void, void> {
    const b = newBuild();
    yield* this.#addEntries(b, toc.entries);
    yield* this.#finishIndex(b);
  }

  /**
   * The first pass of the index over TOC entries, given in any number of runs: the nodes by name,
   * their chunks, owner names carried over. What it keeps of an entry is copied, so that the
   * entries can be dropped as soon as they are added.
   */
  *#addEntries(b: IndexBuild, entries: readonly TocEntry[]): Generator<void, void, void> {
    const dataEnd = this.footer.dataEnd;
    for (const e of entries) {
      if (++b.work % STEP === 0) yield;
      if (e.type === "chunk") {
        if (!b.lastReg) {
          throw new InvalidEntryError(e.name, "chunk entry without a preceding file");
        }
        this.#addChunk(b.lastReg, e, b.all, dataEnd);
        continue;
      }
      const name = cleanEntryName(e.name);
      if (e.type === "hardlink") {
        const node = nodeFromEntry(e, name, "reg");
        b.hardlinks.push([node, e.name]);
        b.order.push(node);
        this.#nodes.set(name, node);
        b.lastReg = undefined;
        continue;
      }
      const node = nodeFromEntry(e, name, e.type);
      if (node.userName) b.userNames.set(node.uid, node.userName);
      else node.userName = b.userNames.get(node.uid) ?? "";
      if (node.groupName) b.groupNames.set(node.gid, node.groupName);
      else node.groupName = b.groupNames.get(node.gid) ?? "";
      b.order.push(node);
      // A name given twice: the later entry wins, as when the tar is extracted.
      this.#nodes.set(name, node);
      if (e.type === "reg") {
        b.lastReg = node;
        if ((e.size ?? 0) > 0) this.#addChunk(node, e, b.all, dataEnd);
      } else {
        b.lastReg = undefined;
      }
    }
  }

  /** The rest of the index once every entry is added: hardlinks, the tree, extents, checks. */
  *#finishIndex(b: IndexBuild): Generator<void, void, void> {
    const { order, hardlinks, all } = b;
    const dataEnd = this.footer.dataEnd;
    let work = 0;
    const root = this.#nodes.get("");
    if (!root) this.#nodes.set("", impliedDir(""));
    else if (root.type !== "dir") throw new InvalidEntryError(root.name, "root is not a directory");
    else root.numLink++;

    // Hardlinks point at whatever their target name finally holds; chains are followed.
    const linkNodes = new Set(hardlinks.map(([n]) => n));
    const targets = new Map<MutableNode, MutableNode>();
    for (const [node, entryName] of hardlinks) {
      let target = node;
      for (let depth = 0; linkNodes.has(target); depth++) {
        const link = target.linkName;
        const next = this.#nodes.get(cleanEntryNameFor(entryName, link));
        if (!next) {
          throw new InvalidEntryError(
            entryName,
            `hardlink target ${JSON.stringify(link)} not found`,
          );
        }
        if (depth > 64) throw new InvalidEntryError(entryName, "hardlink loop");
        target = next;
      }
      if (target.type === "dir") throw new InvalidEntryError(entryName, "hardlink to a directory");
      targets.set(node, target);
    }

    for (const node of order) {
      if (++work % STEP === 0) yield;
      if (node.name === "" || this.#nodes.get(node.name) !== node) continue;
      const target = targets.get(node) ?? node;
      target.numLink++;
      if (target !== node) this.#nodes.set(node.name, target);
      this.#attach(node.name, target);
    }

    this.#computeExtents(all, dataEnd);
    for (const node of order) {
      if (++work % STEP === 0) yield;
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
    this.#index = yield* compact(this.#nodes);
    this.#nodes.clear();
  }

  #addChunk(
    node: MutableNode,
    e: TocEntry,
    all: Chunk[],
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
    all.push(c);
  }

  #computeExtents(all: Chunk[], dataEnd: number): void {
    let sorted = true;
    for (let i = 1; i < all.length; i++) {
      if (all[i].compressedOffset < all[i - 1].compressedOffset) {
        sorted = false;
        break;
      }
    }
    const list = sorted ? all : [...all].sort((a, b) => a.compressedOffset - b.compressedOffset);
    let end = dataEnd;
    for (let i = list.length - 1; i >= 0; i--) {
      const c = list[i] as { compressedEnd: number; compressedOffset: number };
      c.compressedEnd = end;
      if (i > 0 && list[i - 1].compressedOffset !== c.compressedOffset) end = c.compressedOffset;
    }
  }

  /** The compact index (see {@link CompactIndex}). */
  get index(): CompactIndex {
    return this.#index;
  }

  /** The node at `path` (any spelling that cleans to it); hardlinks resolve to their target. */
  entry(path: string): EstargzNode | undefined {
    const k = this.#find(path);
    return k === undefined ? undefined : this.node(k);
  }

  #find(path: string): number | undefined {
    const k = this.#index.byPath.get(path);
    if (k !== undefined) return k;
    try {
      return this.#index.byPath.get(cleanEntryName(path));
    } catch {
      return undefined;
    }
  }

  /** Node `k` of the {@link index} as an object (made once, on first use). */
  node(k: number): EstargzNode {
    const seen = this.#views[k];
    if (seen) return seen;
    const x = this.#index;
    const view: EstargzNode = {
      name: x.name[k],
      type: NODE_TYPES[x.type[k]],
      xattrs: x.xattrs.get(k),
      offset: x.offset[k],
      size: x.size[k],
      mode: x.mode[k],
      uid: x.uid[k],
      gid: x.gid[k],
      modtimeMs: x.modtimeMs[k],
      linkName: x.linkName.get(k) ?? "",
      devMajor: x.devMajor[k],
      devMinor: x.devMinor[k],
      userName: x.owners[x.userName[k]],
      groupName: x.owners[x.groupName[k]],
      numLink: x.numLink[k],
    };
    this.#views[k] = view;
    NODE_INDEX.set(view, k);
    return view;
  }

  /** The root directory. */
  root(): EstargzNode {
    return this.node(0);
  }

  #indexOf(at: string | EstargzNode): number | undefined {
    if (typeof at === "string") return this.#find(at);
    const k = NODE_INDEX.get(at);
    return k !== undefined && this.#views[k] === at ? k : this.#find(at.name);
  }

  /**
   * A directory's children by base name, in TOC order. Takes a path or a node this blob
   * returned.
   */
  children(dir: string | EstargzNode): ReadonlyMap<string, EstargzNode> {
    const k = this.#indexOf(dir);
    if (k === undefined || this.#index.edgeCount[k] === 0) return EMPTY_CHILDREN;
    let m = this.#listings.get(k);
    if (!m) {
      const x = this.#index;
      const list = new Map<string, EstargzNode>();
      const start = x.edgeStart[k];
      for (let e = start; e < start + x.edgeCount[k]; e++) {
        list.set(x.edgeName[e], this.node(x.edgeNode[e]));
      }
      this.#listings.set(k, m = list);
    }
    return m;
  }

  /** A regular file's chunks sorted by `chunkOffset` (empty for empty files). */
  chunks(file: string | EstargzNode): readonly Chunk[] {
    const k = this.#indexOf(file);
    if (k === undefined) return NO_CHUNKS;
    const x = this.#index;
    const n = x.chunkCount[k];
    if (n === 0) return NO_CHUNKS;
    return x.chunks.slice(x.chunkStart[k], x.chunkStart[k] + n);
  }

  /** The chunk of `file` that holds byte `offset` of its content. */
  chunkAt(file: string | EstargzNode, offset: number): Chunk | undefined {
    const k = this.#indexOf(file);
    if (k === undefined) return undefined;
    const x = this.#index;
    const list = x.chunks;
    let lo = x.chunkStart[k];
    let hi = lo + x.chunkCount[k] - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = list[mid];
      if (offset < c.chunkOffset) hi = mid - 1;
      else if (offset >= c.chunkOffset + c.chunkSize) lo = mid + 1;
      else return c;
    }
    return undefined;
  }

  /**
   * The chunks of `file` that hold bytes of `[start, end)` of its content, in order: a binary
   * search over the index's flat chunk list, without copying the file's whole list (the read
   * path asks this on every read).
   */
  chunksBetween(file: string | EstargzNode, start: number, end: number): Chunk[] {
    const k = this.#indexOf(file);
    if (k === undefined) return [];
    const x = this.#index;
    const list = x.chunks;
    const last = x.chunkStart[k] + x.chunkCount[k];
    let lo = x.chunkStart[k];
    let hi = last;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].chunkOffset + list[mid].chunkSize <= start) lo = mid + 1;
      else hi = mid;
    }
    const out: Chunk[] = [];
    for (let i = lo; i < last && list[i].chunkOffset < end; i++) out.push(list[i]);
    return out;
  }

  /** Every node of the index by path (hardlink names map to their target). */
  *nodes(): IterableIterator<[string, EstargzNode]> {
    for (const [p, k] of this.#index.byPath) yield [p, this.node(k)];
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
    const list = [...this.#index.chunks];
    list.sort((a, b) => a.compressedOffset - b.compressedOffset || a.innerOffset - b.innerOffset);
    for (const c of list) await this.readChunk(c);
    return list.length;
  }
}

/** What the first pass of an index build gathers (see {@link EstargzBlob}'s `#addEntries`). */
interface IndexBuild {
  readonly order: MutableNode[];
  /** Hardlink nodes and their entries' names. */
  readonly hardlinks: [MutableNode, string][];
  readonly all: Chunk[];
  lastReg: MutableNode | undefined;
  readonly userNames: Map<number, string>;
  readonly groupNames: Map<number, string>;
  work: number;
}

function newBuild(): IndexBuild {
  return {
    order: [],
    hardlinks: [],
    all: [],
    lastReg: undefined,
    userNames: new Map(),
    groupNames: new Map(),
    work: 0,
  };
}

/** Which row of its blob's index a node handed out is (see {@link EstargzBlob.node}). */
const NODE_INDEX = new WeakMap<EstargzNode, number>();

const EMPTY_INDEX: CompactIndex = compact(new Map([["", impliedDir("")]])).next()
  .value as CompactIndex;

/**
 * Freezes the nodes of a built index (path to node, hardlink names to their target) into a
 * {@link CompactIndex}: nodes numbered in the order their first path was indexed, which is the
 * TOC's, so every open of a blob numbers them alike.
 */
function* compact(byName: ReadonlyMap<string, MutableNode>): Generator<void, CompactIndex, void> {
  const rows = new Map<MutableNode, number>();
  const root = byName.get("")!;
  rows.set(root, 0);
  let work = 0;
  for (const n of byName.values()) {
    if (++work % STEP === 0) yield;
    if (!rows.has(n)) rows.set(n, rows.size);
  }
  const count = rows.size;
  const x = {
    count,
    name: new Array<string>(count),
    type: new Uint8Array(count),
    mode: new Uint32Array(count),
    uid: new Uint32Array(count),
    gid: new Uint32Array(count),
    devMajor: new Uint32Array(count),
    devMinor: new Uint32Array(count),
    numLink: new Uint32Array(count),
    size: new Float64Array(count),
    offset: new Float64Array(count),
    modtimeMs: new Float64Array(count),
    userName: new Uint32Array(count),
    groupName: new Uint32Array(count),
    owners: [] as string[],
    linkName: new Map<number, string>(),
    xattrs: new Map<number, Readonly<Record<string, string>>>(),
    edgeStart: new Uint32Array(count),
    edgeCount: new Uint32Array(count),
    edgeName: [] as string[],
    edgeNode: [] as number[],
    chunkStart: new Uint32Array(count),
    chunkCount: new Uint32Array(count),
    chunks: [] as Chunk[],
    byPath: new Map<string, number>(),
  };
  const owners = new Map<string, number>();
  const owner = (s: string): number => {
    let i = owners.get(s);
    if (i === undefined) {
      owners.set(s, i = x.owners.length);
      x.owners.push(s);
    }
    return i;
  };
  for (const [n, k] of rows) {
    if (k % STEP === 0) yield;
    x.name[k] = n.name;
    x.type[k] = NODE_TYPES.indexOf(n.type);
    x.mode[k] = n.mode;
    x.uid[k] = n.uid;
    x.gid[k] = n.gid;
    x.devMajor[k] = n.devMajor;
    x.devMinor[k] = n.devMinor;
    x.numLink[k] = n.numLink;
    x.size[k] = n.size;
    x.offset[k] = n.offset;
    x.modtimeMs[k] = n.modtimeMs;
    x.userName[k] = owner(n.userName);
    x.groupName[k] = owner(n.groupName);
    if (n.linkName) x.linkName.set(k, n.linkName);
    if (n.xattrs) x.xattrs.set(k, n.xattrs);
    if (n.children) {
      x.edgeStart[k] = x.edgeName.length;
      x.edgeCount[k] = n.children.size;
      for (const [base, c] of n.children) {
        x.edgeName.push(base);
        x.edgeNode.push(rows.get(c)!);
      }
    }
    if (n.chunks) {
      x.chunkStart[k] = x.chunks.length;
      x.chunkCount[k] = n.chunks.length;
      for (const c of n.chunks) x.chunks.push(c);
    }
  }
  for (const [p, n] of byName) {
    if (++work % STEP === 0) yield;
    x.byPath.set(p, rows.get(n)!);
  }
  const byStart = new Map<number, { start: number; end: number; chunks: Chunk[]; index: number }>();
  for (const c of x.chunks) {
    if (++work % STEP === 0) yield;
    const m = byStart.get(c.compressedOffset);
    if (m) m.chunks.push(c);
    else {
      const start = c.compressedOffset;
      byStart.set(start, { start, end: c.compressedEnd, chunks: [c], index: 0 });
    }
  }
  const members = [...byStart.values()].sort((a, b) => a.start - b.start);
  members.forEach((m, i) => (m.index = i));
  return { ...x, edgeNode: Uint32Array.from(x.edgeNode), members };
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

/** The TOC JSON out of the compressed TOC region, inflated on the runtime's thread pool. */
async function inflateToc(format: BlobFormat, compressed: Uint8Array): Promise<Uint8Array> {
  const inflated = await new Promise<Uint8Array>((resolve, reject) => {
    const done = (err: Error | null, out: Uint8Array) => {
      if (!err) resolve(out);
      else if (format === "zstd") {
        reject(new TocError(`malformed zstd TOC: ${err.message}`, { cause: err }));
      } else reject(new TocError(`malformed TOC gzip stream: ${err.message}`, { cause: err }));
    };
    if (format === "zstd") {
      zlib.zstdDecompress(compressed, { maxOutputLength: MAX_TOC_BYTES }, done);
    } else zlib.gunzip(compressed, { maxOutputLength: MAX_TOC_BYTES }, done);
  });
  return format === "zstd" ? inflated : tocOfTar(inflated);
}

/** The TOC JSON: the one entry of the tar that gzip eStargz compresses as its TOC. */
function tocOfTar(tar: Uint8Array): Uint8Array {
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

/** `sha256:…` of `b`, a MiB per step. */
function* sha256Steps(b: Uint8Array): Generator<void, string, void> {
  const h = createHash("sha256");
  for (let at = 0; at < b.length; at += 1 << 20) {
    h.update(b.subarray(at, Math.min(b.length, at + (1 << 20))));
    yield;
  }
  return "sha256:" + h.digest("hex");
}

/**
 * Runs a generator's steps, letting the event loop run whenever {@link SLICE_MS} have passed:
 * long work on the mount path then delays the requests of other mounts by about that much.
 */
async function inSlices<T>(steps: Generator<void, T, void>): Promise<T> {
  let since = performance.now();
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (performance.now() - since > SLICE_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      since = performance.now();
    }
  }
}

/** Opens a blob: footer, TOC (checked against `expectedTocDigest` when given), index. */
export function openBlob(reader: BlobReader, opts?: OpenOptions): Promise<EstargzBlob> {
  return EstargzBlob.open(reader, opts);
}
