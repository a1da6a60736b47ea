/**
 * The FUSE server end to end: an in-memory tree mounted for real and checked with the real
 * tools (ls, stat, find, cat, sha256sum, dd, readlink, getfattr, xfs_io, touch, mkdir).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type FuseSession,
  MemoryFileSystem,
  mount,
  S_IFBLK,
  S_IFCHR,
  S_IFIFO,
} from "../src/fuse/mod.ts";
import { Cleanup, ok, sh, tempDir } from "./_fuse.ts";
import { testBytes } from "./_registry.ts";

/** Deterministic pseudo-random bytes (the registry harness' generator). */
const bytes = testBytes;

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

const SIZES = [0, 1, 4095, 4096, 4097];
const BIG = bytes(50 * 1000 * 1000, 42);
const BIG_SHA = sha256(BIG);

describe("fuse: a mounted in-memory tree", () => {
  const cleanup = new Cleanup();
  const memfs = new MemoryFileSystem();
  let mp = "";
  let session: FuseSession;
  const p = (name: string): string => path.join(mp, name);

  before(async () => {
    for (const n of SIZES) memfs.addFile(`f${n}`, bytes(n, n + 1));
    memfs.addFile("big", BIG);
    memfs.addFile("owned", "mine\n", {
      uid: 1234,
      gid: 5678,
      perm: 0o640,
      mtimeSec: 1_600_000_000,
      mtimeNsec: 987_654_321,
    });
    memfs.addSymlink("link", "f1");
    memfs.addSymlink("dir/abs", "/etc/hostname");
    memfs.addDevice("dev/null", S_IFCHR, (1 << 8) | 3, { perm: 0o666 });
    memfs.addDevice("dev/sda1", S_IFBLK, (8 << 8) | 1, { perm: 0o660 });
    memfs.addDevice("dev/fifo", S_IFIFO, 0);
    memfs.addFile("x", "with xattrs", {
      xattrs: { "user.greeting": "hello", "trusted.overlay.opaque": "y" },
    });
    for (let d = 0; d < 100; d++) {
      for (let f = 0; f < 100; f++) memfs.addFile(`many/d${d}/f${f}`, `${d}/${f}`);
    }
    const dir = await tempDir();
    cleanup.dirs.push(dir);
    mp = path.join(dir, "mnt");
    await fsp.mkdir(mp);
    session = cleanup.add(await mount(memfs, mp, { subtype: "stargztest" }));
  });

  after(() => cleanup.run());

  it("negotiates the protocol and shows up as fuse.<subtype>", async () => {
    assert.match(session.protocol, /^7\.\d+$/);
    const mounts = await fsp.readFile("/proc/self/mountinfo", "utf8");
    const line = mounts.split("\n").find((l) => l.split(" ")[4] === mp);
    assert.ok(line, "mount is listed");
    assert.match(line, / - fuse\.stargztest stargztest ro,/);
  });

  it("ls -la lists types, modes, owners and sizes", async () => {
    const out = await ok(["ls", "-la", "--time-style=+%s", mp]);
    const rows = new Map(
      out.trim().split("\n").slice(1).map((l) => {
        const f = l.split(/\s+/);
        const arrow = f.indexOf("->");
        return [arrow > 0 ? f[arrow - 1] : f[f.length - 1], f] as const;
      }),
    );
    assert.deepEqual([...rows.keys()].sort(), [
      ".",
      "..",
      "big",
      "dev",
      "dir",
      "f0",
      "f1",
      "f4095",
      "f4096",
      "f4097",
      "link",
      "many",
      "owned",
      "x",
    ]);
    assert.equal(rows.get("f4097")![0], "-rw-r--r--");
    assert.equal(rows.get("f4097")![4], "4097");
    assert.equal(rows.get("owned")![0], "-rw-r-----");
    assert.equal(rows.get("owned")![2], "1234");
    assert.equal(rows.get("owned")![3], "5678");
    assert.equal(rows.get("owned")![5], "1600000000");
    assert.equal(rows.get("many")![0], "drwxr-xr-x");
    assert.equal(rows.get("link")![0], "lrwxrwxrwx");
    const dev = await ok(["ls", "-l", p("dev")]);
    assert.match(dev, /^crw-rw-rw- 1 root root 1, 3 .* null$/m);
    assert.match(dev, /^brw-rw---- 1 root root 8, 1 .* sda1$/m);
    assert.match(dev, /^prw-r--r-- 1 root root +0 .* fifo$/m);
  });

  it("stat shows modes, uid/gid, sizes, nlink, rdev and nanosecond mtimes", async () => {
    const fmt = "%f %u %g %s %h %t %T %Y %y";
    const st = async (name: string): Promise<string[]> =>
      (await ok(["stat", "-c", fmt, p(name)])).trim().split(" ");
    const owned = await st("owned");
    assert.deepEqual(owned.slice(0, 8), ["81a0", "1234", "5678", "5", "1", "0", "0", "1600000000"]);
    assert.match(owned.slice(8).join(" "), /\.987654321 /);
    const nul = await st("dev/null");
    assert.deepEqual(nul.slice(0, 7), ["21b6", "0", "0", "0", "1", "1", "3"]);
    const sda = await st("dev/sda1");
    assert.deepEqual(sda.slice(0, 7), ["61b0", "0", "0", "0", "1", "8", "1"]);
    // A directory's nlink is 2 plus its subdirectories.
    assert.equal((await st("many"))[4], "102");
    assert.equal((await st("f4096"))[3], "4096");
    assert.equal((await st("big"))[3], String(BIG.length));
    const fsType = (await ok(["stat", "-f", "-c", "%T %l", mp])).trim();
    assert.match(fsType, /^fuse\S* 255$/);
  });

  it("find walks 10k entries, and the kernel's references are counted and forgotten", async () => {
    const out = await ok(["find", p("many")]);
    const lines = out.trim().split("\n");
    assert.equal(lines.length, 1 + 100 + 100 * 100);
    assert.ok(lines.includes(p("many/d99/f99")));
    const ls = await ok(["find", p("many"), "-type", "f", "-ls"]);
    assert.equal(ls.trim().split("\n").length, 10_000);
    assert.ok(session.referencedNodes >= 10_000, `referenced ${session.referencedNodes}`);
    // Make the kernel drop unused dentries and inodes: each one ends in FORGET.
    await fsp.writeFile("/proc/sys/vm/drop_caches", "2");
    const deadline = Date.now() + 5000;
    // Nearly all of them: the kernel may keep a few (the directory find ended in, for one).
    while (memfs.forgets < 9_000 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(memfs.forgets >= 9_000, `forgotten ${memfs.forgets}`);
    assert.ok(session.referencedNodes < 1_500, `still referenced ${session.referencedNodes}`);
  });

  it("cat and sha256sum read files of 0 B, 1 B, 4095-4097 B and 50 MB", async () => {
    for (const n of SIZES) {
      const sum = (await ok(["sha256sum", p(`f${n}`)])).split(" ")[0];
      assert.equal(sum, sha256(bytes(n, n + 1)), `f${n}`);
    }
    assert.equal(await ok(["cat", p("owned")]), "mine\n");
    assert.equal((await ok(["sha256sum", p("big")])).split(" ")[0], BIG_SHA);
  });

  it("dd reads odd offsets and sizes", async () => {
    const cases = [[0, 1], [1, 4095], [4095, 2], [12_345, 1_000_003], [BIG.length - 7, 100]];
    for (const [skip, count] of cases) {
      const r = await ok([
        "sh",
        "-c",
        `dd if=${p("big")} bs=65537 iflag=skip_bytes,count_bytes skip=${skip} count=${count} ` +
        `status=none | sha256sum`,
      ]);
      const want = sha256(BIG.subarray(skip, Math.min(BIG.length, skip + count)));
      assert.equal(r.split(" ")[0], want, `skip=${skip} count=${count}`);
    }
    // Direct I/O skips the page cache: every byte comes straight from a READ reply.
    const direct = await ok([
      "sh",
      "-c",
      `dd if=${p("big")} bs=1M iflag=direct,skip_bytes,count_bytes skip=4096 count=3000000 ` +
      `status=none | sha256sum`,
    ]);
    assert.equal(direct.split(" ")[0], sha256(BIG.subarray(4096, 4096 + 3_000_000)));
  });

  it("readlink returns symlink targets", async () => {
    assert.equal((await ok(["readlink", p("link")])).trim(), "f1");
    assert.equal((await ok(["readlink", p("dir/abs")])).trim(), "/etc/hostname");
    const r = await sh(["readlink", "-v", p("f1")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Invalid argument/);
  });

  it("getfattr dumps xattrs and reports a missing one as ENODATA", async () => {
    const dump = await ok(["getfattr", "--absolute-names", "-d", "-m", "-", p("x")]);
    assert.match(dump, /^user\.greeting="hello"$/m);
    assert.match(dump, /^trusted\.overlay\.opaque="y"$/m);
    const one = await ok(["getfattr", "--only-values", "-n", "user.greeting", p("x")]);
    assert.equal(one, "hello");
    const missing = await sh(["getfattr", "-n", "user.missing", p("x")]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /No such attribute/);
    assert.equal(await ok(["getfattr", "--absolute-names", "-d", "-m", "-", p("f1")]), "");
  });

  it("lseek finds data and holes", async () => {
    const out = await ok(["xfs_io", "-r", "-c", "seek -d 100", "-c", "seek -h 100", p("f4097")]);
    assert.match(out, /DATA\s+100/);
    assert.match(out, /HOLE\s+4097/);
  });

  it("writes, touch, mkdir, rm, mv, chmod and setfattr fail with EROFS", async () => {
    const attempts = [
      ["touch", p("new")],
      ["touch", p("f1")],
      ["mkdir", p("newdir")],
      ["sh", "-c", `echo x > ${p("f1")}`],
      ["sh", "-c", `echo x >> ${p("f0")}`],
      ["rm", "-f", p("f1")],
      ["mv", p("f1"), p("f2")],
      ["ln", "-s", "a", p("sym")],
      ["chmod", "600", p("f1")],
      ["setfattr", "-n", "user.a", "-v", "b", p("f1")],
    ];
    for (const argv of attempts) {
      const r = await sh(argv);
      assert.notEqual(r.code, 0, argv.join(" "));
      assert.match(r.stderr, /Read-only file system/, argv.join(" "));
    }
    assert.equal((await ok(["cat", p("f1")])).length, 1);
  });

  it("serves 16 parallel readers", async () => {
    const results = await Promise.all(
      Array.from(
        { length: 16 },
        (_, i) =>
          i % 2
            ? ok(["sha256sum", p("big")])
            : ok(["sh", "-c", `dd if=${p("big")} bs=4096 iflag=direct status=none | sha256sum`]),
      ),
    );
    for (const r of results) assert.equal(r.split(" ")[0], BIG_SHA);
  });
});

describe("fuse: metadata after the kernel's timeouts expired", () => {
  const cleanup = new Cleanup();
  /** Counts what reaches the filesystem. */
  class CountingFs extends MemoryFileSystem {
    lookups = 0;
    getattrs = 0;
    override lookup(parent: number, name: string) {
      this.lookups++;
      return super.lookup(parent, name);
    }
    override getattr(node: number) {
      this.getattrs++;
      return super.getattr(node);
    }
  }
  const memfs = new CountingFs();
  let mp = "";

  before(async () => {
    // More names than one READDIRPLUS reply holds, in the root and in each directory.
    for (let d = 0; d < 300; d++) memfs.addFile(`d${d}/f`, "x");
    for (let f = 0; f < 300; f++) memfs.addFile(`d0/g${f}`, "y");
    const dir = await tempDir();
    cleanup.dirs.push(dir);
    mp = path.join(dir, "mnt");
    await fsp.mkdir(mp);
    cleanup.add(await mount(memfs, mp, { subtype: "stargztest", entryTimeout: 1, attrTimeout: 1 }));
  });

  after(() => cleanup.run());

  it("a second find -ls is answered by READDIRPLUS, not by a LOOKUP per name", async () => {
    const first = await ok(["find", mp, "-ls"]);
    // The kernel's entry and attribute timeouts (1 s) have to run out: the condition is time.
    await new Promise((r) => setTimeout(r, 1200));
    const [lookups, getattrs] = [memfs.lookups, memfs.getattrs];
    const again = await ok(["find", mp, "-ls"]);
    assert.equal(again.split("\n").length, first.split("\n").length);
    // 601 names: a cached listing or plain READDIR continuations would ask for each again.
    const asked = memfs.lookups - lookups + memfs.getattrs - getattrs;
    assert.ok(asked < 60, `${asked} LOOKUP/GETATTR on the second walk`);
  });
});
