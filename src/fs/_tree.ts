/**
 * The inode tree of one eStargz layer, as overlayfs expects a lower layer. The eStargz index
 * already resolves the TOC (cleaned names, implied parents, hardlinks, the later of two entries
 * of one name, link counts); this adds what the filesystem needs on top: stable node ids,
 * `.wh.NAME` served as a character device 0:0 named NAME, `.wh..wh..opq` as the
 * `trusted.overlay.opaque=y` xattr of its directory, and the TOC's own bookkeeping entries
 * (`stargz.index.json`, the prefetch landmarks) left out.
 *
 * The tree holds no object per node: a node is its id, and what the filesystem asks of it is
 * read from the blob's compact index through a few typed arrays of its own (index row, parent,
 * flags, directory edges). A 100k-entry layer's tree costs about 2 MB where one object and one
 * Map per node took 28 MB.
 */
import { setImmediate } from "node:timers";
import type { CompactIndex, NodeType } from "../estargz/mod.ts";
import { decodeXattrs, NODE_TYPES } from "../estargz/mod.ts";
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG } from "../fuse/mod.ts";

export { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG };

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
/** Root entries that belong to the format, not to the image. */
const HIDDEN_ROOT_NAMES = new Set([
  "stargz.index.json",
  ".prefetch.landmark",
  ".no.prefetch.landmark",
]);
/** The xattr overlayfs reads to tell an opaque directory. */
export const OPAQUE_XATTR = "trusted.overlay.opaque";
const OPAQUE_VALUE = new TextEncoder().encode("y");
/** Shared by every node without xattrs. */
const NO_XATTRS: ReadonlyMap<string, Uint8Array> = new Map();
/** st_blocks counts 512-byte units; sizes are rounded up to 4 KiB blocks like a disk would. */
const BLOCK_SIZE = 4096;
const WHITEOUT = 1;
const OPAQUE = 2;
/** Building yields to the event loop after this long (see {@link LayerTree.build}). */
const SLICE_MS = 10;

const TYPE_BITS: Record<NodeType, number> = {
  dir: S_IFDIR,
  reg: S_IFREG,
  symlink: S_IFLNK,
  char: S_IFCHR,
  block: S_IFBLK,
  fifo: S_IFIFO,
};
/** File-type bits by the index's type code. */
const MODE_OF_TYPE = Uint32Array.from(NODE_TYPES.map((t) => TYPE_BITS[t]));
const DIR = NODE_TYPES.indexOf("dir");
const REG = NODE_TYPES.indexOf("reg");
const SYMLINK = NODE_TYPES.indexOf("symlink");

/** What the tree reads of an opened blob (an `EstargzBlob`). */
export interface LayerIndex {
  readonly index: CompactIndex;
}

/** One inode of the layer, read from the tree on demand (hardlinked paths share one id). */
export interface LayerNode {
  readonly id: number;
  /** st_mode including the file-type bits. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly nlink: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly linkName: string;
  /** Extended attributes; nodes without any share one empty, read-only map. */
  readonly xattrs: ReadonlyMap<string, Uint8Array>;
  /** Path of the regular file's TOC entry, for chunk lookups (first name of a hardlinked file). */
  readonly path: string;
  /** True for directories (their entries: {@link LayerTree.entries}, {@link LayerTree.child}). */
  readonly isDir: boolean;
  /** Id of the parent, for directories (the root is its own parent; 0 for other nodes). */
  readonly parentId: number;
  /** True for a whiteout served as a 0:0 character device. */
  readonly whiteout: boolean;
}

/** Passed by {@link LayerTree.build} to a constructor that leaves the building to it. */
const DEFERRED = Symbol("deferred");

/** `st_blocks` (512-byte units) for a size. */
export function blocksOf(size: number): number {
  return Math.ceil(size / BLOCK_SIZE) * (BLOCK_SIZE / 512);
}

/** A directory being walked while the tree is built. */
interface Frame {
  readonly id: number;
  /** The directory's next edge in the index, and its end. */
  edge: number;
  readonly end: number;
  readonly isRoot: boolean;
  readonly ids: number[];
  readonly names: string[];
  readonly whiteouts: [string, number][];
}

/**
 * The inode tree of a layer. Node ids start at 1 (the root) and follow a depth-first walk of the
 * index in TOC order (a directory's whiteouts after its other entries), so two processes that
 * open the same layer number its nodes alike.
 */
export class LayerTree {
  readonly #x: CompactIndex;
  /** Index row of each id (at `id - 1`); a whiteout's is its `.wh.` entry's. */
  #row: Uint32Array = new Uint32Array(0);
  #flags: Uint8Array = new Uint8Array(0);
  #parent: Int32Array = new Int32Array(0);
  /** A directory's entries: `#edgeCount[id]` edges from `#edgeStart[id]`, in TOC order. */
  #edgeStart: Int32Array = new Int32Array(0);
  #edgeCount: Int32Array = new Int32Array(0);
  #edgeIds: Int32Array = new Int32Array(0);
  /** Served name of each edge (the index's own strings, except for whiteouts). */
  #edgeNames: string[] = [];
  /** Each directory's edge positions sorted by name, for lookups. */
  #sorted: Int32Array = new Int32Array(0);
  readonly #xattrs = new Map<number, ReadonlyMap<string, Uint8Array>>();

  /** Builds the tree at once (see {@link build} for the version that yields). */
  constructor(index: LayerIndex, deferred?: typeof DEFERRED) {
    this.#x = index.index;
    if (deferred === DEFERRED) return;
    const steps = this.#builder(index);
    while (!steps.next().done) { /* no yields */ }
  }

  /** Builds the tree, yielding to the event loop every {@link SLICE_MS} of work. */
  static async build(index: LayerIndex): Promise<LayerTree> {
    const tree = new LayerTree(index, DEFERRED);
    const steps = tree.#builder(index);
    let since = performance.now();
    for (;;) {
      const r = steps.next();
      if (r.done) break;
      if (performance.now() - since > SLICE_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        since = performance.now();
      }
    }
    return tree;
  }

  /** The walk; yields every 1024 nodes so that {@link build} can check the clock. */
  *#builder(index: LayerIndex): Generator<void, void, void> {
    const x = index.index;
    const row: number[] = [];
    const flags: number[] = [];
    const parent: number[] = [];
    const edgeStart: number[] = [];
    const edgeCount: number[] = [];
    const edgeIds: number[] = [];
    const edgeNames: string[] = [];
    const sorted: number[] = [];
    /** Ids of nodes reached by more than one name (hardlinks), while building. */
    const linked = new Map<number, number>();
    const newId = (k: number, flag: number): number => {
      row.push(k);
      flags.push(flag);
      parent.push(0);
      edgeStart.push(0);
      edgeCount.push(0);
      return row.length;
    };
    const enter = (k: number, parentId: number, isRoot: boolean): Frame => {
      const id = newId(k, 0);
      parent[id - 1] = parentId || id;
      const edge = x.edgeStart[k];
      return { id, edge, end: edge + x.edgeCount[k], isRoot, ids: [], names: [], whiteouts: [] };
    };
    const stack: Frame[] = [enter(0, 0, true)];
    let work = 0;
    while (stack.length > 0) {
      if (++work % 1024 === 0) yield;
      const f = stack[stack.length - 1];
      if (f.edge === f.end) {
        stack.pop();
        // A whiteout only matters when this layer does not itself provide the name.
        if (f.whiteouts.length > 0) {
          const provided = new Set(f.names);
          for (const [name, w] of f.whiteouts) {
            if (provided.has(name)) continue;
            provided.add(name);
            f.ids.push(newId(w, WHITEOUT));
            f.names.push(name);
          }
        }
        edgeStart[f.id - 1] = edgeIds.length;
        edgeCount[f.id - 1] = f.ids.length;
        const base = edgeIds.length;
        for (let i = 0; i < f.ids.length; i++) {
          edgeIds.push(f.ids[i]);
          edgeNames.push(f.names[i]);
        }
        const order = f.names.map((_, i) => i).sort((a, b) =>
          f.names[a] < f.names[b] ? -1 : f.names[a] > f.names[b] ? 1 : 0
        );
        for (const i of order) sorted.push(base + i);
        continue;
      }
      const name = x.edgeName[f.edge];
      const child = x.edgeNode[f.edge];
      f.edge++;
      if (f.isRoot && HIDDEN_ROOT_NAMES.has(name)) continue;
      if (name === OPAQUE_MARKER) {
        flags[f.id - 1] |= OPAQUE;
        continue;
      }
      if (name.startsWith(WHITEOUT_PREFIX)) {
        f.whiteouts.push([name.slice(WHITEOUT_PREFIX.length), child]);
        continue;
      }
      f.names.push(name);
      const shared = linked.get(child);
      if (shared !== undefined) {
        f.ids.push(shared); // another name of a hardlinked file
      } else if (x.type[child] === DIR) {
        const sub = enter(child, f.id, false);
        f.ids.push(sub.id);
        stack.push(sub);
      } else {
        const id = newId(child, 0);
        if (x.numLink[child] > 1) linked.set(child, id);
        f.ids.push(id);
      }
    }
    this.#row = Uint32Array.from(row);
    this.#flags = Uint8Array.from(flags);
    this.#parent = Int32Array.from(parent);
    this.#edgeStart = Int32Array.from(edgeStart);
    this.#edgeCount = Int32Array.from(edgeCount);
    this.#edgeIds = Int32Array.from(edgeIds);
    this.#edgeNames = edgeNames;
    this.#sorted = Int32Array.from(sorted);
  }

  /** The root's id. */
  get rootId(): number {
    return 1;
  }

  /** The root node. */
  get root(): LayerNode {
    return this.node(1)!;
  }

  /** The node with id `id`, or undefined. */
  node(id: number): LayerNode | undefined {
    if (!(id >= 1 && id <= this.#row.length)) return undefined;
    const x = this.#x;
    const k = this.#row[id - 1];
    if (this.#flags[id - 1] & WHITEOUT) {
      return {
        id,
        mode: S_IFCHR,
        uid: 0,
        gid: 0,
        size: 0,
        mtimeMs: x.modtimeMs[k],
        nlink: 1,
        rdevMajor: 0,
        rdevMinor: 0,
        linkName: "",
        xattrs: NO_XATTRS,
        path: x.name[k],
        isDir: false,
        parentId: 0,
        whiteout: true,
      };
    }
    const type = x.type[k];
    const isDir = type === DIR;
    const linkName = x.linkName.get(k) ?? "";
    return {
      id,
      mode: MODE_OF_TYPE[type] | (x.mode[k] & 0o7777),
      uid: x.uid[k],
      gid: x.gid[k],
      size: type === SYMLINK ? Buffer.byteLength(linkName) : type === REG ? x.size[k] : 0,
      mtimeMs: x.modtimeMs[k],
      // Directories: "." and the name in the parent, plus one ".." per subdirectory.
      nlink: Math.max(1, x.numLink[k]),
      rdevMajor: x.devMajor[k],
      rdevMinor: x.devMinor[k],
      linkName,
      xattrs: this.#xattrsOf(id, k),
      path: x.name[k],
      isDir,
      parentId: isDir ? this.#parent[id - 1] : 0,
      whiteout: false,
    };
  }

  #xattrsOf(id: number, k: number): ReadonlyMap<string, Uint8Array> {
    const opaque = (this.#flags[id - 1] & OPAQUE) !== 0;
    const raw = this.#x.xattrs.get(k);
    if (!raw && !opaque) return NO_XATTRS;
    let m = this.#xattrs.get(id);
    if (!m) {
      const decoded = decodeXattrs({ xattrs: raw });
      if (opaque) decoded.set(OPAQUE_XATTR, OPAQUE_VALUE);
      this.#xattrs.set(id, m = decoded.size > 0 ? decoded : NO_XATTRS);
    }
    return m;
  }

  /** Number of entries of directory `id` (0 for other nodes). */
  entryCount(id: number): number {
    return this.#edgeCount[id - 1] ?? 0;
  }

  /** Entry `i` (TOC order) of directory `id`: its name and node id. */
  entryAt(id: number, i: number): [name: string, id: number] {
    const e = this.#edgeStart[id - 1] + i;
    return [this.#edgeNames[e], this.#edgeIds[e]];
  }

  /** The entries of directory `id` in TOC order. */
  *entries(id: number): IterableIterator<[name: string, id: number]> {
    const n = this.entryCount(id);
    for (let i = 0; i < n; i++) yield this.entryAt(id, i);
  }

  /** Id of the entry `name` of directory `id`, or undefined. */
  child(id: number, name: string): number | undefined {
    const start = this.#edgeStart[id - 1];
    let lo = start;
    let hi = start + (this.#edgeCount[id - 1] ?? 0) - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = this.#sorted[mid];
      const n = this.#edgeNames[e];
      if (n === name) return this.#edgeIds[e];
      if (n < name) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /** The node at a root-relative path (`""` is the root), following the tree. */
  lookupPath(p: string): LayerNode | undefined {
    let id: number | undefined = 1;
    if (p !== "") {
      for (const part of p.split("/")) {
        id = this.child(id, part);
        if (id === undefined) return undefined;
      }
    }
    return this.node(id);
  }

  /** Number of nodes. */
  get size(): number {
    return this.#row.length;
  }
}
