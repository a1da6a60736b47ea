/**
 * A small in-memory read-only filesystem built up by path: what the FUSE tests and benchmarks
 * mount, and a worked example of the {@link FileSystem} interface.
 */
import { Errno, FuseError } from "./errno.ts";
import {
  type Attr,
  type DirectorySink,
  type Entry,
  type FileSystem,
  type NodeId,
  ROOT_ID,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from "./types.ts";

/** Content of `size` bytes that repeats `block` (large files without large memory). */
export interface RepeatedContent {
  size: number;
  block: Uint8Array;
}

/** Attributes a new node may set; the rest default (root-owned, fixed mtime). */
export interface NodeOptions {
  /** Permission bits (the type comes from the add method). */
  perm?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  xattrs?: Record<string, Uint8Array | string>;
}

interface MemNode {
  entry: Entry;
  parent: NodeId;
  children?: Map<string, NodeId>;
  names?: string[];
  data?: Uint8Array;
  repeat?: RepeatedContent;
  target?: string;
  xattrs?: Map<string, Uint8Array>;
}

const encoder = new TextEncoder();

/** The in-memory filesystem. Node ids are indexes into a table; nodes are never removed. */
export class MemoryFileSystem implements FileSystem {
  #nodes: (MemNode | undefined)[] = [];
  /** How many times the server reported a node as forgotten. */
  forgets = 0;

  constructor(root: NodeOptions = {}) {
    this.#nodes[ROOT_ID] = this.#node(ROOT_ID, S_IFDIR | (root.perm ?? 0o755), 0, root);
    this.#nodes[ROOT_ID]!.children = new Map();
    this.#nodes[ROOT_ID]!.names = [];
  }

  /** Number of nodes, the root included. */
  get size(): number {
    return this.#nodes.length - 1;
  }

  #node(id: NodeId, mode: number, size: number, o: NodeOptions, parent = ROOT_ID): MemNode {
    const attr: Attr = {
      mode,
      size,
      nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1,
      uid: o.uid ?? 0,
      gid: o.gid ?? 0,
      rdev: 0,
      mtimeSec: o.mtimeSec ?? 1_700_000_000,
      mtimeNsec: o.mtimeNsec ?? 123_456_789,
    };
    const n: MemNode = { entry: { node: id, attr }, parent };
    if (o.xattrs) {
      n.xattrs = new Map(
        Object.entries(o.xattrs).map((
          [k, v],
        ) => [k, typeof v === "string" ? encoder.encode(v) : v]),
      );
    }
    return n;
  }

  #resolve(path: string): NodeId | undefined {
    let id = ROOT_ID;
    for (const part of path.split("/")) {
      if (!part) continue;
      const next = this.#nodes[id]?.children?.get(part);
      if (next === undefined) return undefined;
      id = next;
    }
    return id;
  }

  #add(path: string, mode: number, size: number, o: NodeOptions): MemNode {
    const parts = path.split("/").filter((p) => p);
    const name = parts.pop();
    if (!name) throw new Error(`cannot add ${JSON.stringify(path)}`);
    let parent = ROOT_ID;
    for (const p of parts) parent = this.#child(parent, p) ?? this.#mkdir(parent, p, {});
    const dir = this.#nodes[parent]!;
    if (!dir.children) throw new Error(`${path}: parent is not a directory`);
    if (dir.children.has(name)) throw new Error(`${path} exists`);
    const id = this.#nodes.length;
    const n = this.#node(id, mode, size, o, parent);
    this.#nodes[id] = n;
    dir.children.set(name, id);
    dir.names!.push(name);
    return n;
  }

  #child(parent: NodeId, name: string): NodeId | undefined {
    return this.#nodes[parent]?.children?.get(name);
  }

  #mkdir(parent: NodeId, name: string, o: NodeOptions): NodeId {
    const dir = this.#nodes[parent]!;
    const id = this.#nodes.length;
    const n = this.#node(id, S_IFDIR | (o.perm ?? 0o755), 0, o, parent);
    n.children = new Map();
    n.names = [];
    this.#nodes[id] = n;
    dir.children!.set(name, id);
    dir.names!.push(name);
    dir.entry.attr.nlink++;
    return id;
  }

  /** Adds a directory (and missing parents); returns its node id. */
  addDir(path: string, o: NodeOptions = {}): NodeId {
    const existing = this.#resolve(path);
    if (existing !== undefined) return existing;
    const parts = path.split("/").filter((p) => p);
    const name = parts.pop()!;
    const parent = parts.length ? this.addDir(parts.join("/")) : ROOT_ID;
    return this.#mkdir(parent, name, o);
  }

  /** Adds a regular file with `content`; returns its node id. */
  addFile(
    path: string,
    content: Uint8Array | string | RepeatedContent,
    o: NodeOptions = {},
  ): NodeId {
    const data = typeof content === "string" ? encoder.encode(content) : content;
    const size = data instanceof Uint8Array ? data.length : data.size;
    const n = this.#add(path, S_IFREG | (o.perm ?? 0o644), size, o);
    if (data instanceof Uint8Array) n.data = data;
    else n.repeat = data;
    return n.entry.node;
  }

  /** Adds a symlink to `target`; returns its node id. */
  addSymlink(path: string, target: string, o: NodeOptions = {}): NodeId {
    const n = this.#add(path, S_IFLNK | (o.perm ?? 0o777), Buffer.byteLength(target), o);
    n.target = target;
    return n.entry.node;
  }

  /** Adds a device or fifo node (`type` is S_IFCHR, S_IFBLK or S_IFIFO); returns its node id. */
  addDevice(path: string, type: number, rdev: number, o: NodeOptions = {}): NodeId {
    const n = this.#add(path, type | (o.perm ?? 0o644), 0, o);
    n.entry.attr.rdev = rdev;
    return n.entry.node;
  }

  /** The node id at `path`, if any. */
  nodeAt(path: string): NodeId | undefined {
    return this.#resolve(path);
  }

  #get(node: NodeId): MemNode {
    const n = this.#nodes[node];
    if (!n) throw new FuseError(Errno.ENOENT);
    return n;
  }

  lookup(parent: NodeId, name: string): Entry | undefined {
    const dir = this.#get(parent);
    if (!dir.children) throw new FuseError(Errno.ENOTDIR);
    const id = dir.children.get(name);
    return id === undefined ? undefined : this.#nodes[id]!.entry;
  }

  getattr(node: NodeId): Attr {
    return this.#get(node).entry.attr;
  }

  readlink(node: NodeId): string {
    const n = this.#get(node);
    if (n.target === undefined) throw new FuseError(Errno.EINVAL);
    return n.target;
  }

  read(node: NodeId, _fh: number, offset: number, dest: Uint8Array): number {
    const n = this.#get(node);
    if (n.children) throw new FuseError(Errno.EISDIR);
    const size = n.entry.attr.size;
    if (offset >= size) return 0;
    const len = Math.min(dest.length, size - offset);
    if (n.data) {
      dest.set(n.data.subarray(offset, offset + len));
      return len;
    }
    const block = n.repeat!.block;
    let done = 0;
    while (done < len) {
      const at = (offset + done) % block.length;
      const take = Math.min(block.length - at, len - done);
      dest.set(take === block.length ? block : block.subarray(at, at + take), done);
      done += take;
    }
    return len;
  }

  readdir(node: NodeId, _fh: number, cookie: number, sink: DirectorySink): void {
    const dir = this.#get(node);
    if (!dir.children) throw new FuseError(Errno.ENOTDIR);
    const names = dir.names!;
    // Cookie i means "entry i next": 0 ".", 1 "..", then the children in insertion order.
    for (let i = cookie; i < names.length + 2; i++) {
      let ok: boolean;
      if (i === 0) ok = sink.add(".", 1, dir.entry);
      else if (i === 1) ok = sink.add("..", 2, this.#nodes[dir.parent]!.entry);
      else {
        const name = names[i - 2];
        ok = sink.add(name, i + 1, this.#nodes[dir.children.get(name)!]!.entry);
      }
      if (!ok) return;
    }
  }

  getxattr(node: NodeId, name: string): Uint8Array | undefined {
    return this.#get(node).xattrs?.get(name);
  }

  listxattr(node: NodeId): string[] {
    return [...(this.#get(node).xattrs?.keys() ?? [])];
  }

  forget(_node: NodeId): void {
    this.forgets++;
  }
}
