import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Logger, setLogSink } from "../log/mod.ts";
import { BindLayerFs } from "../../test/snapshotter_bindfs.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  mountAll,
  NotFoundError,
  REMOTE_LABEL,
  RestoreError,
  Snapshotter,
  STARGZ_DIGEST_LABEL,
  STARGZ_REFERENCE_LABEL,
  TARGET_SNAPSHOT_LABEL,
  UnavailableError,
} from "./mod.ts";

const run = promisify(execFile);
const log = new Logger({ test: "snapshotter" });

async function mountsUnder(dir: string): Promise<string[]> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8");
  return text.split("\n").map((l) => l.split(" ")[4] ?? "").filter((m) =>
    m === dir || m.startsWith(dir + "/")
  ).reverse();
}

async function unmountUnder(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) await run("umount", ["-l", m]).catch(() => {});
}

describe("Snapshotter (overlay semantics)", () => {
  let tmp: string;
  let root: string;
  let sn: Snapshotter;

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-sn-"));
    root = path.join(tmp, "root");
    sn = await Snapshotter.open({ root, log, asyncRemove: false });
  });
  after(async () => {
    await sn?.close();
    await unmountUnder(tmp);
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it("prepares a base snapshot as a rw bind mount and commits it with its usage", async () => {
    const mounts = await sn.prepare("base-active", "", { "containerd.io/snapshot/x": "1" });
    assert.equal(mounts.length, 1);
    assert.equal(mounts[0]!.type, "bind");
    assert.deepEqual(mounts[0]!.options, ["rw", "rbind"]);
    assert.match(mounts[0]!.source, new RegExp(`^${root}/snapshots/\\d+/fs$`));
    await fs.writeFile(path.join(mounts[0]!.source, "hello"), "x".repeat(10000));
    const active = await sn.usage("base-active");
    assert.equal(active.inodes, 2);
    assert.ok(active.size >= 10000, `size ${active.size}`);
    const st = await sn.stat("base-active");
    assert.equal(st.kind, "active");
    assert.deepEqual(st.labels, { "containerd.io/snapshot/x": "1" });
    await sn.commit("base", "base-active", { l: "v" });
    await assert.rejects(sn.stat("base-active"), NotFoundError);
    const info = await sn.stat("base");
    assert.equal(info.kind, "committed");
    assert.equal(info.parent, "");
    assert.deepEqual(info.labels, { l: "v" }, "labels are replaced on commit");
    assert.deepEqual(await sn.usage("base"), active);
  });

  it("stacks overlay mounts with upper/work for active and lowerdir chains", async () => {
    const m1 = await sn.prepare("l2-active", "base");
    assert.equal(m1[0]!.type, "overlay");
    const opts = m1[0]!.options;
    const id = path.basename(path.dirname(m1[0]!.options.find((o) => o.startsWith("upperdir="))!));
    assert.ok(opts.includes(`workdir=${root}/snapshots/${id}/work`));
    assert.ok(opts.includes(`upperdir=${root}/snapshots/${id}/fs`));
    const baseId = path.basename(path.dirname((await sn.mounts("l2-active"))[0]!.options
      .find((o) => o.startsWith("lowerdir="))!.slice(9)));
    assert.ok(opts.includes(`lowerdir=${root}/snapshots/${baseId}/fs`));
    const target = path.join(tmp, "mnt");
    await fs.mkdir(target);
    await mountAll(m1, target);
    try {
      assert.equal((await fs.readFile(path.join(target, "hello"), "utf8")).length, 10000);
      await fs.writeFile(path.join(target, "second"), "2");
    } finally {
      await run("umount", [target]);
    }
    await sn.commit("l2", "l2-active");
    const v = await sn.view("l2-view", "l2");
    assert.equal(v[0]!.type, "overlay");
    assert.ok(!v[0]!.options.some((o) => o.startsWith("upperdir=")));
    assert.ok(v[0]!.options.some((o) => o.startsWith("lowerdir=") && o.includes(":")));
    const v1 = await sn.view("base-view", "base");
    assert.deepEqual(v1[0]!.options, ["ro", "rbind"], "a view of one layer binds it read-only");
    const v0 = await sn.view("empty-view", "");
    assert.deepEqual(v0[0]!.options, ["ro", "rbind"]);
    await assert.rejects(sn.commit("x", "l2-view"), FailedPreconditionError);
    await assert.rejects(sn.mounts("l2"), FailedPreconditionError);
    await assert.rejects(sn.mounts("nope"), NotFoundError);
  });

  it("refuses duplicates, unknown and uncommitted parents, and removing non-leaves", async () => {
    await assert.rejects(sn.prepare("l2-view", ""), AlreadyExistsError);
    await assert.rejects(sn.prepare("p", "missing"), NotFoundError);
    await assert.rejects(sn.prepare("p", "l2-view"), InvalidArgumentError);
    await sn.prepare("dup-active", "");
    await assert.rejects(sn.commit("base", "dup-active"), AlreadyExistsError);
    await assert.rejects(sn.remove("base"), FailedPreconditionError);
    await assert.rejects(sn.remove("nope"), NotFoundError);
    await sn.remove("dup-active");
    await assert.rejects(sn.stat("dup-active"), NotFoundError);
    const huge = { k: "v".repeat(4096) };
    await assert.rejects(sn.prepare("big", "", huge), InvalidArgumentError);
    await assert.rejects(sn.update({ name: "base", labels: huge }), InvalidArgumentError);
    await assert.rejects(sn.stat("big"), NotFoundError);
  });

  it("updates labels by field path and rejects immutable fields", async () => {
    const a = await sn.update({ name: "l2", labels: { a: "1", b: "2" } });
    assert.deepEqual(a.labels, { a: "1", b: "2" });
    assert.ok(
      a.updated.seconds * 1e9 + a.updated.nanos >= a.created.seconds * 1e9 + a.created.nanos,
    );
    const b = await sn.update({ name: "l2", labels: { b: "3", c: "4" } }, ["labels.b"]);
    assert.deepEqual(b.labels, { a: "1", b: "3" });
    const c = await sn.update({ name: "l2", labels: {} }, ["labels.a"]);
    assert.deepEqual(c.labels, { b: "3" }, "an absent value deletes the label");
    const d = await sn.update({ name: "l2", labels: { z: "9" } }, ["labels"]);
    assert.deepEqual(d.labels, { z: "9" });
    await assert.rejects(sn.update({ name: "l2", labels: {} }, ["parent"]), InvalidArgumentError);
    await assert.rejects(sn.update({ name: "gone", labels: {} }), NotFoundError);
    assert.deepEqual((await sn.stat("l2")).labels, { z: "9" });
  });

  it("lists with containerd filters", async () => {
    const names = async (...f: string[]): Promise<string[]> =>
      (await sn.list(f)).map((i) => i.name).sort();
    assert.deepEqual(await names(), ["base", "base-view", "empty-view", "l2", "l2-view"]);
    assert.deepEqual(await names("kind==committed"), ["base", "l2"]);
    assert.deepEqual(await names("kind==view,parent==base"), ["base-view"]);
    assert.deepEqual(await names("name==l2", "name==base"), ["base", "l2"]);
    assert.deepEqual(await names("labels.z==9"), ["l2"]);
    assert.deepEqual(await names(`labels."z"`), ["l2"]);
    assert.deepEqual(await names("name~=^l2"), ["l2", "l2-view"]);
    assert.deepEqual(await names(`parent=="l2"`), ["l2-view"]);
    assert.deepEqual(await names("kind!=view"), ["base", "l2"]);
    await assert.rejects(sn.list(["name=="]), InvalidArgumentError);
    await assert.rejects(sn.list(["name=x"]), InvalidArgumentError);
  });

  it("removes directories at once without async removal, and Cleanup reclaims strays", async () => {
    const m = await sn.prepare("tmp-active", "");
    const dir = path.dirname(m[0]!.source);
    await sn.remove("tmp-active");
    await assert.rejects(fs.stat(dir), { code: "ENOENT" });
    const stray = path.join(root, "snapshots", "new-stray");
    await fs.mkdir(path.join(stray, "fs"), { recursive: true });
    // A mount left inside a stray directory is released before removal, never deleted through.
    const keep = path.join(tmp, "keep");
    await fs.mkdir(keep);
    await fs.writeFile(path.join(keep, "precious"), "1");
    await run("mount", ["--bind", keep, path.join(stray, "fs")]);
    await sn.cleanup();
    await assert.rejects(fs.stat(stray), { code: "ENOENT" });
    assert.equal(await fs.readFile(path.join(keep, "precious"), "utf8"), "1");
  });

  it("mounts a 128-layer chain (lowerdir compacted like containerd)", async () => {
    let parent = "";
    for (let i = 0; i < 128; i++) {
      const mounts = await sn.prepare(`deep-${i}-active`, parent);
      const upper = mounts[0]!.type === "bind"
        ? mounts[0]!.source
        : mounts[0]!.options.find((o) => o.startsWith("upperdir="))!.slice(9);
      await fs.writeFile(path.join(upper, `layer-${i}`), String(i));
      await sn.commit(`deep-${i}`, `deep-${i}-active`);
      parent = `deep-${i}`;
    }
    const mounts = await sn.prepare("deep-top", parent);
    const lower = mounts[0]!.options.find((o) => o.startsWith("lowerdir="))!;
    assert.equal(lower.split(":").length, 128);
    assert.ok(mounts[0]!.options.join(",").length > 4096, "needs compaction to be mountable");
    const target = path.join(tmp, "deep");
    await fs.mkdir(target);
    await mountAll(mounts, target);
    try {
      const entries = (await fs.readdir(target)).filter((n) => n.startsWith("layer-"));
      assert.equal(entries.length, 128);
      assert.equal(await fs.readFile(path.join(target, "layer-0"), "utf8"), "0");
    } finally {
      await run("umount", [target]);
    }
  });
});

describe("Snapshotter (async removal and reopening)", () => {
  it("keeps removed directories until Cleanup and cleans strays on open", async () => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-sn-"));
    const root = path.join(tmp, "root");
    try {
      let sn = await Snapshotter.open({ root, log });
      const m = await sn.prepare("a", "");
      const dir = path.dirname(m[0]!.source);
      await sn.remove("a");
      await fs.stat(dir);
      await sn.prepare("a", "");
      await sn.cleanup();
      await assert.rejects(fs.stat(dir), { code: "ENOENT" });
      await sn.remove("a");
      await sn.close();
      sn = await Snapshotter.open({ root, log });
      try {
        assert.deepEqual(await fs.readdir(path.join(root, "snapshots")), []);
      } finally {
        await sn.close();
      }
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  });
});

describe("Snapshotter (remote snapshots)", () => {
  let tmp: string;
  let root: string;
  let layerDir: string;
  const lines: string[] = [];
  let restoreSink: (l: string) => void;

  const labelsFor = (target: string, digest: string): Record<string, string> => ({
    [TARGET_SNAPSHOT_LABEL]: target,
    [STARGZ_REFERENCE_LABEL]: "registry.test/img:1",
    [STARGZ_DIGEST_LABEL]: digest,
  });

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-snr-"));
    root = path.join(tmp, "root");
    layerDir = path.join(tmp, "layer1");
    await fs.mkdir(layerDir);
    await fs.writeFile(path.join(layerDir, "from-remote"), "remote!");
    restoreSink = setLogSink((l) => lines.push(l));
  });
  after(async () => {
    setLogSink(restoreSink);
    await unmountUnder(tmp);
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it("commits a mountable layer as a remote snapshot and answers AlreadyExists", async () => {
    const rfs = new BindLayerFs();
    rfs.layers.set(`sha256:${"a".repeat(64)}`, layerDir);
    const sn = await Snapshotter.open({ root, log, fileSystem: rfs });
    try {
      await assert.rejects(
        sn.prepare("extract-1 chain1", "", labelsFor("chain1", `sha256:${"a".repeat(64)}`)),
        AlreadyExistsError,
      );
      const info = await sn.stat("chain1");
      assert.equal(info.kind, "committed");
      assert.equal(info.labels[REMOTE_LABEL], "remote snapshot");
      assert.equal(info.labels[TARGET_SNAPSHOT_LABEL], "chain1");
      assert.deepEqual(await sn.usage("chain1"), { size: 0, inodes: 0 });
      assert.ok(lines.some((l) => JSON.parse(l)["remote-snapshot-prepared"] === "true"));
      // containerd finds the target the way its metadata layer does.
      const found = await sn.list([`labels."containerd.io/snapshot.ref"==chain1,parent==""`]);
      assert.deepEqual(found.map((i) => i.name), ["chain1"]);

      // A layer that cannot be mounted falls back to an ordinary snapshot.
      lines.length = 0;
      const m = await sn.prepare(
        "extract-2 chain2",
        "chain1",
        labelsFor("chain2", `sha256:${"b".repeat(64)}`),
      );
      assert.equal(m[0]!.type, "overlay");
      const fallback = lines.map((l) => JSON.parse(l)).find((l) =>
        l["remote-snapshot-prepared"] === "false"
      );
      assert.match(String(fallback?.reason), /sha256:b{64} is not remote/);
      const target = path.join(tmp, "mnt");
      await fs.mkdir(target);
      await mountAll(m, target);
      try {
        assert.equal(await fs.readFile(path.join(target, "from-remote"), "utf8"), "remote!");
      } finally {
        await run("umount", [target]);
      }
      await sn.commit("chain2", "extract-2 chain2");

      // An unavailable remote ancestor makes Mounts/View/Prepare answer Unavailable.
      assert.equal(rfs.mounted.size, 1);
      const mp = [...rfs.mounted][0]!;
      rfs.broken.add(mp);
      await assert.rejects(sn.view("v", "chain2"), UnavailableError);
      await assert.rejects(sn.prepare("p", "chain1"), UnavailableError);
      await assert.rejects(sn.stat("v"), NotFoundError, "nothing was created");
      rfs.broken.delete(mp);
      await sn.view("v", "chain2");
      rfs.broken.add(mp);
      await assert.rejects(sn.mounts("v"), UnavailableError);
      rfs.broken.delete(mp);
      assert.equal((await sn.mounts("v")).length, 1);
    } finally {
      await sn.close();
    }
    assert.deepEqual(await mountsUnder(path.join(root, "snapshots")), [], "close unmounts");
  });

  it("restores remote snapshots in the background on open", async () => {
    const rfs = new BindLayerFs();
    rfs.layers.set(`sha256:${"a".repeat(64)}`, layerDir);
    rfs.mountDelayMs = 300;
    const sn = await Snapshotter.open({ root, log, fileSystem: rfs });
    try {
      // The store answers at once while the layer is still being mounted.
      assert.deepEqual(sn.restoreStatus(), { pending: ["chain1"], failed: [] });
      const t0 = Date.now();
      assert.equal((await sn.stat("chain1")).kind, "committed");
      assert.ok(Date.now() - t0 < 250);
      // A request touching the layer waits for its restore instead of failing.
      const m = await sn.mounts("v");
      assert.ok(Date.now() - t0 >= 250);
      assert.equal(m.length, 1);
      const report = await sn.restored;
      assert.deepEqual(report.restored, ["chain1"]);
      assert.deepEqual(report.failed, []);
    } finally {
      await sn.close();
    }
  });

  it("replaces the stale mounts of a process that died", async () => {
    const rfs = new BindLayerFs();
    rfs.layers.set(`sha256:${"a".repeat(64)}`, layerDir);
    // The first instance is never closed: its bind mount stays, as after a crash.
    const dead = await Snapshotter.open({ root, log, fileSystem: rfs });
    await dead.restored;
    const snapshots = path.join(root, "snapshots");
    assert.equal((await mountsUnder(snapshots)).length, 1);
    const sn = await Snapshotter.open({ root, log, fileSystem: rfs });
    try {
      await sn.restored;
      const mounts = await mountsUnder(snapshots);
      assert.equal(mounts.length, 1, `mounted once again: ${mounts}`);
      assert.equal(await fs.readFile(path.join(mounts[0]!, "from-remote"), "utf8"), "remote!");
    } finally {
      await sn.close();
      await dead.close();
    }
    assert.deepEqual(await mountsUnder(snapshots), []);
  });

  it("reports layers that cannot be restored (fatal unless allowed)", async () => {
    const rfs = new BindLayerFs();
    const strict = await Snapshotter.open({ root, log, fileSystem: rfs });
    await assert.rejects(strict.restored, RestoreError);
    await strict.close();

    const sn = await Snapshotter.open({
      root,
      log,
      fileSystem: rfs,
      allowInvalidMountsOnRestart: true,
    });
    try {
      const report = await sn.restored;
      assert.equal(report.failed.length, 1);
      assert.equal(report.failed[0]!.name, "chain1");
      assert.deepEqual(sn.restoreStatus(), { pending: [], failed: report.failed });
      await assert.rejects(sn.mounts("v"), UnavailableError);
      // Left for removal: containerd can remove the broken chain top-down.
      await sn.remove("v");
      await sn.remove("chain2");
      await sn.remove("chain1");
      await sn.cleanup();
      assert.deepEqual(await fs.readdir(path.join(root, "snapshots")), []);
    } finally {
      await sn.close();
    }
    assert.equal(await fs.readFile(path.join(layerDir, "from-remote"), "utf8"), "remote!");
  });
});
