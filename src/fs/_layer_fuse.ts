/**
 * Serves a {@link Layer} through FUSE: the layer's inode tree answers lookups, attributes,
 * listings and xattrs; reads go through the layer's read path; the state directory
 * `/.stargz-snapshotter/` (found by exact name only) holds `<digest>.json`, regenerated per read.
 */
import { adopt, Errno, FuseError, mount } from "../fuse/mod.ts";
import type {
  Attr,
  DirectorySink,
  Entry,
  FileSystem,
  FuseSession,
  MountOptions,
  NodeId,
  OpenResult,
  RequestContext,
  SessionState,
  StatFs,
} from "../fuse/mod.ts";
import type { Logger } from "../log/mod.ts";
import { observeUs, Operation } from "../metrics/mod.ts";
import { blocksOf, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "./_tree.ts";
import type { LayerNode } from "./_tree.ts";
import type { Layer } from "./layer.ts";

/** Name of the state directory at the root of every layer (as upstream). */
export const STATE_DIR_NAME = ".stargz-snapshotter";
const STATE_DIR_MODE = S_IFDIR | 0o500;
const STATE_FILE_MODE = S_IFREG | 0o400;

/** Linux `new_encode_dev`, the rdev layout FUSE attributes carry. */
function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** One layer as a FUSE filesystem. */
export class LayerFuseFs implements FileSystem {
  readonly #stateDirId: number;
  readonly #stateFileId: number;
  readonly #stateFileName: string;

  constructor(readonly layer: Layer) {
    const tree = layer.tree;
    this.#stateDirId = tree.size + 1;
    this.#stateFileId = tree.size + 2;
    this.#stateFileName = `${layer.digest}.json`;
  }

  #node(id: NodeId): LayerNode {
    const n = this.layer.tree.node(id);
    if (!n) throw new FuseError(Errno.ENOENT);
    return n;
  }

  #attr(n: LayerNode): Attr {
    const sec = Math.floor(n.mtimeMs / 1000);
    return {
      mode: n.mode,
      size: n.size,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      rdev: makedev(n.rdevMajor, n.rdevMinor),
      mtimeSec: sec,
      mtimeNsec: Math.round((n.mtimeMs - sec * 1000) * 1e6),
      blocks: (n.mode & S_IFMT) === S_IFREG ? blocksOf(n.size) : 0,
    };
  }

  #stateDirAttr(): Attr {
    return {
      mode: STATE_DIR_MODE,
      size: 0,
      nlink: 2,
      uid: 0,
      gid: 0,
      rdev: 0,
      mtimeSec: 0,
      mtimeNsec: 0,
    };
  }

  #stateFileAttr(): Attr {
    const size = this.layer.stateBytes().length;
    return {
      mode: STATE_FILE_MODE,
      size,
      nlink: 1,
      uid: 0,
      gid: 0,
      rdev: 0,
      mtimeSec: 0,
      mtimeNsec: 0,
    };
  }

  #entry(id: NodeId): Entry {
    if (id === this.#stateDirId) return { node: id, attr: this.#stateDirAttr() };
    if (id === this.#stateFileId) return { node: id, attr: this.#stateFileAttr() };
    return { node: id, attr: this.#attr(this.#node(id)) };
  }

  lookup(parent: NodeId, name: string): Entry | undefined {
    if (parent === this.#stateDirId) {
      return name === this.#stateFileName ? this.#entry(this.#stateFileId) : undefined;
    }
    if (parent === this.layer.tree.rootId && name === STATE_DIR_NAME) {
      return this.#entry(this.#stateDirId);
    }
    const child = this.layer.tree.child(this.#node(parent).id, name);
    return child === undefined ? undefined : { node: child, attr: this.#attr(this.#node(child)) };
  }

  getattr(node: NodeId): Attr {
    return this.#entry(node).attr;
  }

  readlink(node: NodeId): string {
    const n = this.#node(node);
    if ((n.mode & S_IFMT) !== S_IFLNK) throw new FuseError(Errno.EINVAL);
    return n.linkName;
  }

  open(node: NodeId): OpenResult {
    // The state file changes with every fetch: bypass the page cache so each read regenerates it.
    if (node === this.#stateFileId) return { fh: 0, directIo: true, keepCache: false };
    const n = this.#node(node);
    if ((n.mode & S_IFMT) === S_IFDIR) throw new FuseError(Errno.EISDIR);
    return { fh: 0 };
  }

  async read(
    node: NodeId,
    _fh: number,
    offset: number,
    dest: Uint8Array,
    ctx: RequestContext,
  ): Promise<number> {
    if (node === this.#stateFileId) {
      const bytes = this.layer.stateBytes();
      const part = bytes.subarray(
        Math.min(offset, bytes.length),
        Math.min(offset + dest.length, bytes.length),
      );
      dest.set(part);
      return part.length;
    }
    const n = this.#node(node);
    if ((n.mode & S_IFMT) !== S_IFREG) throw new FuseError(Errno.EINVAL);
    try {
      return await this.layer.readInto(n.path, n.size, offset, dest, ctx.signal);
    } catch (err) {
      // An interrupted read is answered EINTR by the edge.
      if (ctx.signal.aborted) throw err;
      throw new FuseError(Errno.EIO, `read ${n.path}@${offset}: ${(err as Error).message}`);
    }
  }

  readdir(node: NodeId, _fh: number, cookie: number, sink: DirectorySink): void {
    const started = performance.now();
    try {
      this.#readdir(node, cookie, sink);
    } finally {
      observeUs(Operation.nodeReaddir, this.layer.digest, started);
    }
  }

  #readdir(node: NodeId, cookie: number, sink: DirectorySink): void {
    if (node === this.#stateDirId) {
      // The state directory is absent from the root listing but lists its own file, as upstream,
      // so that `/.stargz-snapshotter/*.json` works inside containers.
      const entries: [string, Entry][] = [
        [".", this.#entry(node)],
        ["..", this.#entry(this.layer.tree.rootId)],
        [this.#stateFileName, this.#entry(this.#stateFileId)],
      ];
      for (let i = cookie; i < entries.length; i++) {
        if (!sink.add(entries[i][0], i + 1, entries[i][1])) return;
      }
      return;
    }
    const tree = this.layer.tree;
    const dir = this.#node(node);
    if (!dir.isDir) throw new FuseError(Errno.ENOTDIR);
    const count = tree.entryCount(node);
    for (let i = cookie; i < count + 2; i++) {
      let ok: boolean;
      if (i === 0) ok = sink.add(".", 1, { node, attr: this.#attr(dir) });
      else if (i === 1) {
        const parent = this.#node(dir.parentId);
        ok = sink.add("..", 2, { node: parent.id, attr: this.#attr(parent) });
      } else {
        const [name, child] = tree.entryAt(node, i - 2);
        ok = sink.add(name, i + 1, { node: child, attr: this.#attr(this.#node(child)) });
      }
      if (!ok) return;
    }
  }

  getxattr(node: NodeId, name: string): Uint8Array | undefined {
    if (node === this.#stateDirId || node === this.#stateFileId) return undefined;
    return this.#node(node).xattrs.get(name);
  }

  listxattr(node: NodeId): string[] {
    if (node === this.#stateDirId || node === this.#stateFileId) return [];
    return [...this.#node(node).xattrs.keys()];
  }

  statfs(): StatFs {
    const size = this.layer.reader.source.size;
    const blocks = Math.ceil(size / 4096);
    return {
      blocks,
      bfree: 0,
      bavail: 0,
      files: this.layer.tree.size,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }
}

/** How {@link mountLayer} mounts. */
export interface LayerMountOptions {
  attrTimeoutSec: number;
  entryTimeoutSec: number;
  debug: boolean;
  log: Logger;
}

/** A mounted layer. */
export interface LayerMount {
  readonly mountpoint: string;
  /** Resolves when the kernel ended the session (e.g. `umount` from outside). */
  readonly closed: Promise<void>;
  /** The /dev/fuse descriptor and what a successor needs to serve it (see `fdstore`). */
  readonly deviceFd: number;
  state(): SessionState;
  /** Leaves the mount to a successor process (see `FuseSession.detach`). */
  detach(): Promise<void>;
  unmount(): Promise<void>;
}

function fuseOptions(layer: Layer, mountpoint: string, opts: LayerMountOptions): MountOptions {
  return {
    subtype: "stargz",
    source: layer.digest.startsWith("sha256:") ? layer.digest : "stargz",
    attrTimeout: opts.attrTimeoutSec,
    entryTimeout: opts.entryTimeoutSec,
    debug: opts.debug,
    logger: opts.log.with({ mountpoint }),
  };
}

function layerMount(mountpoint: string, session: FuseSession): LayerMount {
  return {
    mountpoint,
    closed: session.closed,
    deviceFd: session.deviceFd,
    state: () => session.state(),
    detach: () => session.detach(),
    unmount: () => session.unmount(),
  };
}

/** Mounts `layer` read-only at `mountpoint`. */
export async function mountLayer(
  layer: Layer,
  mountpoint: string,
  opts: LayerMountOptions,
): Promise<LayerMount> {
  const fs = new LayerFuseFs(layer);
  const session = await mount(fs, mountpoint, fuseOptions(layer, mountpoint, opts));
  return layerMount(mountpoint, session);
}

/**
 * Serves `layer` again on the live connection `fd` a previous process mounted at `mountpoint`:
 * node ids are the tree's (assigned in TOC order, so the same for the same layer) and file
 * handles are always 0, so everything the kernel holds still means the same.
 */
export async function adoptLayer(
  layer: Layer,
  mountpoint: string,
  fd: number,
  state: SessionState,
  opts: LayerMountOptions,
): Promise<LayerMount> {
  const fs = new LayerFuseFs(layer);
  const session = await adopt(fs, mountpoint, fd, state, fuseOptions(layer, mountpoint, opts));
  return layerMount(mountpoint, session);
}
