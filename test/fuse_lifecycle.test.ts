/**
 * FUSE mount lifecycle with real mounts: bad mountpoints, mounting twice, unmounting from
 * outside, unmounting while a reader waits in a slow read, FUSE_INTERRUPT, async filesystems and
 * debug logging. Nothing may stay mounted afterwards.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Attr,
  type DirectorySink,
  type Entry,
  Errno,
  type FileSystem,
  FuseError,
  MemoryFileSystem,
  mount,
  type NodeId,
  type OpenResult,
  type RequestContext,
} from "../src/fuse/mod.ts";
import { Logger, setLogLevel, setLogSink } from "../src/log/mod.ts";
import { scriptCommand } from "../src/runtime/mod.ts";
import { Cleanup, ok, sh, tempDir } from "./_fuse.ts";

/** A memory filesystem whose file "slow" blocks reads until released or interrupted. */
class SlowFs implements FileSystem {
  readonly mem = new MemoryFileSystem();
  readonly slow: NodeId;
  readsStarted = 0;
  aborted = 0;
  destroyed = 0;
  #waiters: (() => void)[] = [];
  #released = false;

  constructor() {
    this.mem.addFile("fast", "fast\n");
    this.slow = this.mem.addFile("slow", "slow content\n");
  }

  /** Lets every blocked read finish, and later reads not block. */
  release(): void {
    this.#released = true;
    for (const w of this.#waiters.splice(0)) w();
  }

  lookup(parent: NodeId, name: string): Entry | undefined {
    return this.mem.lookup(parent, name);
  }
  getattr(node: NodeId): Attr {
    return this.mem.getattr(node);
  }
  readdir(node: NodeId, fh: number, cookie: number, sink: DirectorySink): void {
    this.mem.readdir(node, fh, cookie, sink);
  }
  open(node: NodeId): OpenResult {
    // Direct I/O: the reader waits for our reply itself (no readahead in between), so the kernel
    // sends FUSE_INTERRUPT when it gets a signal.
    return { fh: 7, directIo: node === this.slow };
  }
  read(
    node: NodeId,
    fh: number,
    offset: number,
    dest: Uint8Array,
    ctx: RequestContext,
  ): number | Promise<number> {
    assert.equal(fh, 7);
    if (node !== this.slow || this.#released) return this.mem.read(node, fh, offset, dest);
    this.readsStarted++;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => resolve(this.mem.read(node, fh, offset, dest)), 20_000);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve(this.mem.read(node, fh, offset, dest));
      });
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        this.aborted++;
        reject(new DOMException("interrupted", "AbortError"));
      });
    });
  }
  destroy(): void {
    this.destroyed++;
  }
}

/** Answers every operation of a memory filesystem from a later macrotask (the async paths). */
class AsyncFs implements FileSystem {
  readonly mem = new MemoryFileSystem();

  #later<T>(f: () => T): Promise<T> {
    return new Promise((resolve, reject) =>
      setTimeout(() => {
        try {
          resolve(f());
        } catch (err) {
          reject(err);
        }
      }, 1)
    );
  }
  lookup(parent: NodeId, name: string): Promise<Entry | undefined> {
    return this.#later(() => this.mem.lookup(parent, name));
  }
  getattr(node: NodeId): Promise<Attr> {
    return this.#later(() => this.mem.getattr(node));
  }
  readlink(node: NodeId): Promise<string> {
    return this.#later(() => this.mem.readlink(node));
  }
  open(): Promise<OpenResult> {
    return this.#later(() => ({ fh: 3 }));
  }
  read(node: NodeId, fh: number, offset: number, dest: Uint8Array): Promise<number> {
    return this.#later(() => this.mem.read(node, fh, offset, dest));
  }
  opendir(): Promise<OpenResult> {
    return this.#later(() => ({ fh: 4 }));
  }
  readdir(node: NodeId, fh: number, cookie: number, sink: DirectorySink): Promise<void> {
    assert.equal(fh, 4);
    return this.#later(() => this.mem.readdir(node, fh, cookie, sink));
  }
  getxattr(node: NodeId, name: string): Promise<Uint8Array | undefined> {
    return this.#later(() => this.mem.getxattr(node, name));
  }
  listxattr(node: NodeId): Promise<string[]> {
    return this.#later(() => this.mem.listxattr(node));
  }
}

async function isMounted(mp: string): Promise<boolean> {
  const mounts = await fsp.readFile("/proc/self/mountinfo", "utf8");
  return mounts.split("\n").some((l) => l.split(" ")[4] === mp);
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Starts `argv` in the background; `exited` resolves with its exit code or signal. */
function background(argv: string[]): { kill(sig: NodeJS.Signals): void; exited: Promise<string> } {
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.resume();
  child.stderr?.resume();
  const exited = new Promise<string>((resolve) =>
    child.on("close", (code, sig) => resolve(sig ?? String(code)))
  );
  return { kill: (sig) => child.kill(sig), exited };
}

describe("fuse: mount lifecycle", () => {
  const cleanup = new Cleanup();
  let dir = "";

  before(async () => {
    dir = await tempDir();
    cleanup.dirs.push(dir);
  });
  after(() => cleanup.run());

  async function mountpoint(name: string): Promise<string> {
    const mp = path.join(dir, name);
    await fsp.mkdir(mp);
    return mp;
  }

  it("refuses a mountpoint that does not exist", async () => {
    const mp = path.join(dir, "missing");
    await assert.rejects(
      mount(new MemoryFileSystem(), mp),
      (err: unknown) => err instanceof FuseError && err.errno === Errno.ENOENT,
    );
    assert.equal(await isMounted(mp), false);
  });

  it("refuses to mount twice on one mountpoint and serves one tree at two", async () => {
    const memfs = new MemoryFileSystem();
    memfs.addFile("a/b", "shared\n");
    const mp1 = await mountpoint("twice1");
    const mp2 = await mountpoint("twice2");
    const s1 = cleanup.add(await mount(memfs, mp1));
    await assert.rejects(
      mount(memfs, mp1),
      (err: unknown) => err instanceof FuseError && err.errno === Errno.EBUSY,
    );
    const s2 = cleanup.add(await mount(memfs, mp2));
    assert.equal(
      await ok(["cat", path.join(mp1, "a/b"), path.join(mp2, "a/b")]),
      "shared\n".repeat(2),
    );
    await s1.unmount();
    assert.equal(await isMounted(mp1), false);
    assert.equal(await ok(["cat", path.join(mp2, "a/b")]), "shared\n");
    await s2.unmount();
    assert.equal(await isMounted(mp2), false);
  });

  it("ends the session when an operator unmounts it from outside", async () => {
    const memfs = new SlowFs();
    const mp = await mountpoint("outside");
    const s = cleanup.add(await mount(memfs, mp));
    const readers = Array.from(
      { length: 4 },
      () => background(["sh", "-c", `for i in $(seq 200); do cat ${mp}/fast >/dev/null; done`]),
    );
    await new Promise((r) => setTimeout(r, 50));
    await ok(["umount", "-l", mp]);
    await Promise.all(readers.map((r) => r.exited));
    let closed = false;
    s.closed.then(() => (closed = true));
    await until(() => closed, "session end");
    assert.equal(s.ended, true);
    assert.equal(memfs.destroyed, 1);
    assert.equal(await isMounted(mp), false);
    await s.unmount(); // a no-op now
  });

  it("unmounts while a reader is blocked in a slow read", async () => {
    const memfs = new SlowFs();
    const mp = await mountpoint("blocked");
    const s = cleanup.add(await mount(memfs, mp));
    const reader = background(["cat", path.join(mp, "slow")]);
    await until(() => memfs.readsStarted > 0, "the slow read");
    const t0 = Date.now();
    await s.unmount();
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal(await isMounted(mp), false);
    assert.notEqual(await reader.exited, "0", "the reader saw an error");
    assert.equal(memfs.aborted, 1, "the filesystem saw its read aborted");
  });

  it("honours FUSE_INTERRUPT for a slow read", async () => {
    const memfs = new SlowFs();
    const mp = await mountpoint("interrupt");
    const s = cleanup.add(await mount(memfs, mp));
    const reader = background(["dd", `if=${path.join(mp, "slow")}`, "of=/dev/null", "bs=4096"]);
    await until(() => memfs.readsStarted > 0, "the slow read");
    reader.kill("SIGTERM");
    assert.equal(await reader.exited, "SIGTERM");
    await until(() => memfs.aborted > 0, "the abort");
    // The mount is healthy afterwards.
    memfs.release();
    assert.equal(await ok(["cat", path.join(mp, "slow")]), "slow content\n");
    await s.unmount();
  });

  it("serves a filesystem whose answers are all asynchronous", async () => {
    const memfs = new AsyncFs();
    memfs.mem.addFile("d/file", "async\n", { xattrs: { "user.k": "v" } });
    memfs.mem.addSymlink("d/link", "file");
    for (let i = 0; i < 300; i++) memfs.mem.addFile(`many/${"n".repeat(100)}${i}`, "");
    const mp = await mountpoint("async");
    const s = cleanup.add(await mount(memfs, mp, { entryTimeout: 0, attrTimeout: 0 }));
    assert.equal(await ok(["cat", path.join(mp, "d/link")]), "async\n");
    assert.equal((await ok(["ls", path.join(mp, "many")])).trim().split("\n").length, 300);
    const v = await ok(["getfattr", "--only-values", "-n", "user.k", path.join(mp, "d/file")]);
    assert.equal(v, "v");
    const missing = await sh(["stat", path.join(mp, "d/nope")]);
    assert.match(missing.stderr, /No such file or directory/);
    await s.unmount();
  });

  it("detaches its mounts when the process exits without unmounting", async () => {
    const mp = await mountpoint("exit");
    const child = path.join(path.dirname(new URL(import.meta.url).pathname), "_fuse_exit_child.ts");
    const argv = scriptCommand(child, [mp]);
    const r = await sh(argv);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "hi\n\n");
    assert.equal(await isMounted(mp), false);
  });

  it("logs requests and replies at debug level when asked", async () => {
    const lines: string[] = [];
    const prevSink = setLogSink((l) => lines.push(l));
    setLogLevel("debug");
    const mp = await mountpoint("debug");
    try {
      const memfs = new MemoryFileSystem();
      memfs.addFile("seen", "x");
      const s = cleanup.add(
        await mount(memfs, mp, { debug: true, logger: new Logger({ test: "fuse" }) }),
      );
      await ok(["cat", path.join(mp, "seen")]);
      await sh(["stat", path.join(mp, "unseen")]);
      await s.unmount();
    } finally {
      setLogLevel("info");
      setLogSink(prevSink);
    }
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(
      parsed.some((l) => l.msg === "fuse request" && l.op === "LOOKUP" && l.test === "fuse"),
    );
    assert.ok(parsed.some((l) => l.msg === "fuse request" && l.op === "READ"));
    assert.ok(parsed.some((l) => l.msg === "fuse reply" && l.error === undefined));
  });
});
