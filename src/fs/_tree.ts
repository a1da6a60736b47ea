/**
 * The inode tree of one eStargz layer, as overlayfs expects a lower layer. The eStargz index
 * already resolves the TOC (cleaned names, implied parents, hardlinks, the later of two entries
 * of one name, link counts); this adds what the filesystem needs on top: stable node ids,
 * `.wh.NAME` served as a character device 0:0 named NAME, `.wh..wh..opq` as the
 * `trusted.overlay.opaque=y` xattr of its directory, and the TOC's own bookkeeping entries
 * (`stargz.index.json`, the prefetch landmarks) left out.
 */
import type { EstargzNode } from "../estargz/mod.ts";
import { decodeXattrs } from "../estargz/mod.ts";
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
/** Shared by every node without xattrs: 100k empty maps would cost megabytes. */
const NO_XATTRS: ReadonlyMap<string, Uint8Array> = new Map();
/** st_blocks counts 512-byte units; sizes are rounded up to 4 KiB blocks like a disk would. */
const BLOCK_SIZE = 4096;

const TYPE_BITS: Record<EstargzNode["type"], number> = {
  dir: S_IFDIR,
  reg: S_IFREG,
  symlink: S_IFLNK,
  char: S_IFCHR,
  block: S_IFBLK,
  fifo: S_IFIFO,
};

/** What the tree reads of an opened blob (an `EstargzBlob`). */
export interface LayerIndex {
  root(): EstargzNode;
  children(dir: EstargzNode): ReadonlyMap<string, EstargzNode>;
}

/** One inode of the layer. Hardlinked paths share one node. */
export interface LayerNode {
  readonly id: number;
  /** st_mode including the file-type bits. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  linkName: string;
  /** Extended attributes; nodes without any share one empty, read-only map. */
  xattrs: ReadonlyMap<string, Uint8Array>;
  /** Path of the regular file's TOC entry, for chunk lookups (first name of a hardlinked file). */
  path: string;
  /** Children in TOC order, for directories. */
  children?: Map<string, LayerNode>;
  /** Id of the parent, for directories (the root is its own parent). */
  parentId?: number;
  /** True for a whiteout served as a 0:0 character device. */
  whiteout?: boolean;
}

/** `st_blocks` (512-byte units) for a size. */
export function blocksOf(size: number): number {
  return Math.ceil(size / BLOCK_SIZE) * (BLOCK_SIZE / 512);
}

/** The inode tree of a layer. Node ids start at 1 (the root) and never change. */
export class LayerTree {
  readonly #nodes: LayerNode[] = [];
  readonly root: LayerNode;

  /** Builds the tree from the blob's index, walking it in TOC order. */
  constructor(index: LayerIndex) {
    const byIndexNode = new Map<EstargzNode, LayerNode>();
    const visit = (src: EstargzNode, parentId: number | undefined): LayerNode => {
      const shared = byIndexNode.get(src);
      if (shared) return shared; // another name of a hardlinked file
      const node = this.#newNode(src);
      byIndexNode.set(src, node);
      if (src.type !== "dir") return node;
      node.parentId = parentId ?? node.id;
      const children = new Map<string, LayerNode>();
      const whiteouts: [string, EstargzNode][] = [];
      for (const [name, child] of index.children(src)) {
        if (parentId === undefined && HIDDEN_ROOT_NAMES.has(name)) continue;
        if (name === OPAQUE_MARKER) {
          node.xattrs = new Map([...node.xattrs, [OPAQUE_XATTR, OPAQUE_VALUE]]);
        } else if (name.startsWith(WHITEOUT_PREFIX)) {
          whiteouts.push([name.slice(WHITEOUT_PREFIX.length), child]);
        } else {
          children.set(name, visit(child, node.id));
        }
      }
      // A whiteout only matters when this layer does not itself provide the name.
      for (const [name, w] of whiteouts) {
        if (children.has(name)) continue;
        const wh = this.#newNode(w);
        Object.assign(wh, { mode: S_IFCHR, uid: 0, gid: 0, size: 0, nlink: 1, xattrs: NO_XATTRS });
        Object.assign(wh, { rdevMajor: 0, rdevMinor: 0, linkName: "", whiteout: true });
        children.set(name, wh);
      }
      node.children = children;
      return node;
    };
    this.root = visit(index.root(), undefined);
  }

  #newNode(src: EstargzNode): LayerNode {
    const xattrs = src.xattrs ? decodeXattrs(src) : undefined;
    const node: LayerNode = {
      id: this.#nodes.length + 1,
      mode: TYPE_BITS[src.type] | (src.mode & 0o7777),
      uid: src.uid,
      gid: src.gid,
      size: src.type === "symlink"
        ? Buffer.byteLength(src.linkName)
        : src.type === "reg"
        ? src.size
        : 0,
      mtimeMs: src.modtimeMs,
      // Directories: "." and the name in the parent, plus one ".." per subdirectory.
      nlink: Math.max(1, src.numLink),
      rdevMajor: src.devMajor,
      rdevMinor: src.devMinor,
      linkName: src.linkName,
      xattrs: xattrs && xattrs.size > 0 ? xattrs : NO_XATTRS,
      path: src.name,
    };
    this.#nodes.push(node);
    return node;
  }

  /** The node with id `id`, or undefined. */
  node(id: number): LayerNode | undefined {
    return this.#nodes[id - 1];
  }

  /** The node at a root-relative path (`""` is the root), following the tree. */
  lookupPath(p: string): LayerNode | undefined {
    let n: LayerNode | undefined = this.root;
    if (p === "") return n;
    for (const part of p.split("/")) {
      n = n?.children?.get(part);
      if (!n) return undefined;
    }
    return n;
  }

  /** Number of nodes. */
  get size(): number {
    return this.#nodes.length;
  }
}
