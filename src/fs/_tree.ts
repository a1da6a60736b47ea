/**
 * The inode tree of one eStargz layer, built once from its TOC and served as overlayfs expects a
 * lower layer: `.wh.NAME` entries become character devices 0:0 named NAME, `.wh..wh..opq` becomes
 * the `trusted.overlay.opaque=y` xattr of its directory, and the TOC's own bookkeeping entries
 * (`stargz.index.json`, the prefetch landmarks) are not part of the tree.
 */

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

/** The TOC fields the tree needs (a TOC entry with its name already cleaned). */
export interface TreeEntry {
  name: string;
  type: string;
  size?: number;
  modtime?: string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, string>;
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
  /** True for a whiteout served as a 0:0 character device. */
  whiteout?: boolean;
}

function typeBits(type: string): number {
  switch (type) {
    case "dir":
      return S_IFDIR;
    case "reg":
    case "chunk":
      return S_IFREG;
    case "symlink":
      return S_IFLNK;
    case "char":
      return S_IFCHR;
    case "block":
      return S_IFBLK;
    case "fifo":
      return S_IFIFO;
    default:
      return 0;
  }
}

function parseTime(s: string | undefined): number {
  if (!s) return 0;
  const t = Date.parse(s);
  return Number.isNaN(t) ? 0 : t;
}

function decodeXattrs(x: Record<string, string> | undefined): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const [k, b64] of Object.entries(x ?? {})) {
    out.set(k, new Uint8Array(Buffer.from(b64, "base64")));
  }
  return out;
}

/** `st_blocks` (512-byte units) for a size. */
export function blocksOf(size: number): number {
  return Math.ceil(size / BLOCK_SIZE) * (BLOCK_SIZE / 512);
}

/** The inode tree of a layer. Node ids start at 1 (the root) and never change. */
export class LayerTree {
  readonly #nodes: LayerNode[] = [];
  readonly root: LayerNode;

  /** Builds the tree from cleaned TOC entries (in TOC order; `chunk` entries are ignored). */
  constructor(entries: Iterable<TreeEntry>) {
    this.root = this.#newNode(S_IFDIR | 0o755, "");
    this.root.children = new Map();
    const byPath = new Map<string, LayerNode>([["", this.root]]);
    const hardlinks: TreeEntry[] = [];
    const whiteouts: { dir: LayerNode; name: string; entry: TreeEntry }[] = [];

    const dirOf = (p: string): LayerNode => {
      const existing = byPath.get(p);
      if (existing?.children) return existing;
      // Implied directory (tars made by diff tools may omit parents), or a non-directory that a
      // later entry treats as a directory: replace it, as extraction would.
      const slash = p.lastIndexOf("/");
      const parent = dirOf(slash < 0 ? "" : p.slice(0, slash));
      const dir = this.#newNode(S_IFDIR | 0o755, p);
      dir.children = new Map();
      parent.children!.set(slash < 0 ? p : p.slice(slash + 1), dir);
      byPath.set(p, dir);
      return dir;
    };

    for (const e of entries) {
      if (e.type === "chunk" || e.name === "") {
        if (e.name === "" && e.type === "dir") this.#applyMeta(this.root, e);
        continue;
      }
      const slash = e.name.lastIndexOf("/");
      const parentPath = slash < 0 ? "" : e.name.slice(0, slash);
      const base = slash < 0 ? e.name : e.name.slice(slash + 1);
      if (parentPath === "" && HIDDEN_ROOT_NAMES.has(base)) continue;
      const parent = dirOf(parentPath);
      if (base === OPAQUE_MARKER) {
        parent.xattrs = new Map([...parent.xattrs, [OPAQUE_XATTR, OPAQUE_VALUE]]);
        continue;
      }
      if (base.startsWith(WHITEOUT_PREFIX)) {
        whiteouts.push({ dir: parent, name: base.slice(WHITEOUT_PREFIX.length), entry: e });
        continue;
      }
      if (e.type === "hardlink") {
        hardlinks.push(e);
        continue;
      }
      if (e.type === "dir") {
        const existing = byPath.get(e.name);
        const dir = existing?.children ? existing : dirOf(e.name);
        this.#applyMeta(dir, e);
        continue;
      }
      const node = this.#newNode(typeBits(e.type), e.name);
      this.#applyMeta(node, e);
      parent.children!.delete(base); // a later entry of the same name wins, in its new place
      parent.children!.set(base, node);
      byPath.set(e.name, node);
    }

    for (const h of hardlinks) {
      const target = byPath.get(h.linkName ?? "");
      if (!target || target.children) continue; // dangling or to a directory: not representable
      const slash = h.name.lastIndexOf("/");
      const parent = dirOf(slash < 0 ? "" : h.name.slice(0, slash));
      const base = slash < 0 ? h.name : h.name.slice(slash + 1);
      parent.children!.delete(base);
      parent.children!.set(base, target);
      target.nlink++;
      byPath.set(h.name, target);
    }

    for (const w of whiteouts) {
      // A whiteout only matters when this layer does not itself provide the name.
      if (w.dir.children!.has(w.name)) continue;
      const node = this.#newNode(S_IFCHR, "");
      node.whiteout = true;
      node.mtimeMs = parseTime(w.entry.modtime);
      w.dir.children!.set(w.name, node);
    }

    for (const n of this.#nodes) {
      if (n.children) {
        let subdirs = 0;
        for (const c of n.children.values()) if (c.children) subdirs++;
        n.nlink = 2 + subdirs;
      }
    }
  }

  #newNode(mode: number, path: string): LayerNode {
    const node: LayerNode = {
      id: this.#nodes.length + 1,
      mode,
      uid: 0,
      gid: 0,
      size: 0,
      mtimeMs: 0,
      nlink: 1,
      rdevMajor: 0,
      rdevMinor: 0,
      linkName: "",
      xattrs: NO_XATTRS,
      path,
    };
    this.#nodes.push(node);
    return node;
  }

  #applyMeta(node: LayerNode, e: TreeEntry): void {
    node.mode = (node.mode & S_IFMT) | ((e.mode ?? 0) & 0o7777);
    node.uid = e.uid ?? 0;
    node.gid = e.gid ?? 0;
    node.mtimeMs = parseTime(e.modtime);
    node.rdevMajor = e.devMajor ?? 0;
    node.rdevMinor = e.devMinor ?? 0;
    node.linkName = e.linkName ?? "";
    const keep = node.xattrs.get(OPAQUE_XATTR);
    const decoded = decodeXattrs(e.xattrs);
    if (keep) decoded.set(OPAQUE_XATTR, keep);
    node.xattrs = decoded.size > 0 ? decoded : NO_XATTRS;
    if ((node.mode & S_IFMT) === S_IFREG) node.size = e.size ?? 0;
    else if ((node.mode & S_IFMT) === S_IFLNK) {
      node.size = new TextEncoder().encode(node.linkName).length;
    }
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
