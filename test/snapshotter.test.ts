/**
 * End to end with a real containerd 1.6: our daemon (from source) is containerd's `stargz`
 * proxy snapshotter; `ctr snapshots` must behave as with containerd's own overlayfs snapshotter,
 * and `ctr run` must run real containers from it, also across daemon restarts.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type BuiltImage,
  busyboxLayer,
  cleanupDir,
  type Containerd,
  type StargzProcess,
  startContainerd,
  startStargz,
  writeImageArchive,
} from "./_containerd.ts";

let dir: string;
let sgz: StargzProcess | undefined;
let ctd: Containerd | undefined;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "sgz-e2e-"));
  sgz = await startStargz({ dir });
  // Views carry no gc.root label, so containerd's garbage collector takes them at its next
  // run: keep it from running on its own while the transcript is recorded.
  ctd = await startContainerd({ dir, snapshotterAddress: sgz.address, gc: "on-demand" });
});

after(async () => {
  await ctd?.stop();
  await sgz?.stop();
  await cleanupDir(dir);
});

/** Runs a `ctr snapshots` command against one snapshotter. */
async function snap(snapshotter: string, args: string[]): Promise<string> {
  return await ctd!.ctrOk(["snapshots", "--snapshotter", snapshotter, ...args]);
}

/** The source directory of a snapshot's single bind mount or the upperdir of its overlay. */
async function writableDir(snapshotter: string, key: string): Promise<string> {
  const out = await snap(snapshotter, ["mounts", "/mnt", key]);
  const upper = /upperdir=([^,\s]+)/.exec(out);
  if (upper) return upper[1]!;
  const bind = /mount -t bind (\S+) \/mnt/.exec(out);
  assert.ok(bind, out);
  return bind[1]!;
}

/** Replaces what legitimately differs between snapshotters (times, ids, root paths). */
function normalize(text: string): string {
  return text
    .replace(/\d{4}-\d\d-\d\dT[0-9:.]+Z/g, "<time>")
    .replace(/\/\S*?\/snapshots\/\d+\//g, "<root>/snapshots/<id>/")
    // `ctr snapshots label` prints a Go map: its order is random.
    .replace(
      /^(\$ label .*\n)(.*)$/m,
      (_m, cmd: string, labels: string) => cmd + labels.split(",").sort().join(","),
    );
}

describe("ctr snapshots on the stargz proxy snapshotter", () => {
  it("behaves as containerd's overlayfs snapshotter", async () => {
    const transcript = async (sn: string): Promise<string[]> => {
      const out: string[] = [];
      const rec = async (args: string[]) =>
        out.push(`$ ${args.join(" ")}\n${await snap(sn, args)}`);
      const fails = async (args: string[]) => {
        const r = await ctd!.ctr(["snapshots", "--snapshotter", sn, ...args]);
        out.push(`$ ${args.join(" ")} -> exit ${r.code === 0 ? 0 : "!=0"}`);
      };
      await rec(["prepare", "base-a"]);
      await fs.writeFile(path.join(await writableDir(sn, "base-a"), "data"), "x".repeat(5000));
      await fs.mkdir(path.join(await writableDir(sn, "base-a"), "etc"));
      await rec(["commit", "base", "base-a"]);
      await rec(["prepare", "top-a", "base"]);
      await fs.writeFile(path.join(await writableDir(sn, "top-a"), "more"), "y");
      await rec(["commit", "top", "top-a"]);
      await rec(["prepare", "work", "top"]);
      await rec(["view", "look", "top"]);
      await rec(["view", "look-base", "base"]);
      await rec(["ls"]);
      await rec(["tree"]);
      await rec(["usage", "base"]);
      await rec(["usage", "top"]);
      await rec(["label", "top", "containerd.io/snapshot/team=stargz", "plain=1"]);
      await rec(["info", "top"]);
      await rec(["label", "top", "containerd.io/snapshot/team="]);
      await rec(["info", "top"]);
      await rec(["mounts", "/mnt", "work"]);
      await rec(["mounts", "/mnt", "look"]);
      await rec(["mounts", "/mnt", "look-base"]);
      await fails(["rm", "base"]);
      await fails(["prepare", "work", "top"]);
      await fails(["commit", "x", "look"]);
      await fails(["info", "missing"]);
      await rec(["rm", "work", "look", "look-base"]);
      await rec(["rm", "top"]);
      await rec(["rm", "base"]);
      await rec(["ls"]);
      return out.map(normalize);
    };
    const ours = await transcript("stargz");
    const theirs = await transcript("overlayfs");
    assert.deepEqual(ours, theirs);
    // The transcript is not trivially empty: it saw the chain and the labels.
    const all = ours.join("\n");
    assert.match(all, /top\s+base\s+Committed/);
    assert.match(all, /"containerd.io\/snapshot\/team": "stargz"/);
    assert.match(all, /lowerdir=<root>\/snapshots\/<id>\/fs:<root>\/snapshots\/<id>\/fs/);
    // Removal is asynchronous: the directories stay until containerd's garbage collector
    // calls our Cleanup. A synchronous image delete makes it run now.
    const left = async () => await fs.readdir(path.join(sgz!.root, "snapshots"));
    assert.equal((await left()).length, 5);
    const tiny = await writeImageArchive(path.join(dir, "tiny.tar"), "docker.io/library/tiny:1", [
      [{ type: "file", name: "x", data: "x" }],
    ]);
    await ctd!.ctrOk(["images", "import", "--no-unpack", tiny.path]);
    await ctd!.ctrOk(["images", "rm", "--sync", tiny.name]);
    assert.deepEqual(await left(), []);
  });
});

describe("ctr run on the stargz snapshotter", () => {
  let image: BuiltImage;

  before(async () => {
    image = await writeImageArchive(
      path.join(dir, "bb.tar"),
      "docker.io/library/sgz-busybox:latest",
      [await busyboxLayer(), [{ type: "file", name: "hello.txt", data: "hello from layer 2\n" }]],
    );
    await ctd!.ctrOk(["images", "import", "--snapshotter", "stargz", image.path], {
      timeoutMs: 120_000,
    });
  });

  const runOnce = async (id: string): Promise<string> =>
    await ctd!.ctrOk([
      "run",
      "--rm",
      "--snapshotter",
      "stargz",
      image.name,
      id,
      "/bin/sh",
      "-c",
      "echo out-$((6*7)); cat /hello.txt; echo scratch > /tmp/x && cat /tmp/x",
    ], { timeoutMs: 120_000 });

  it("unpacks the image into committed layers and runs a container", async () => {
    const ls = await ctd!.ctrOk(["snapshots", "--snapshotter", "stargz", "ls"]);
    for (const chainId of image.chainIds) assert.ok(ls.includes(chainId), ls);
    const suffix = randomUUID().slice(0, 8);
    assert.equal(await runOnce(`run1-${suffix}`), "out-42\nhello from layer 2\nscratch\n");
  });

  it("keeps working across restarts and a crash of the daemon", async () => {
    const suffix = randomUUID().slice(0, 8);
    const before = await ctd!.ctrOk(["snapshots", "--snapshotter", "stargz", "ls"]);
    const code = await sgz!.stop();
    assert.equal(code, 0, sgz!.logs());
    sgz = await startStargz({ dir });
    await ctd!.snapshotterReady();
    assert.equal(await runOnce(`run2-${suffix}`), "out-42\nhello from layer 2\nscratch\n");
    await sgz.kill();
    sgz = await startStargz({ dir });
    await ctd!.snapshotterReady();
    assert.equal(await runOnce(`run3-${suffix}`), "out-42\nhello from layer 2\nscratch\n");
    const after = await ctd!.ctrOk(["snapshots", "--snapshotter", "stargz", "ls"]);
    const committed = (s: string) => s.split("\n").filter((l) => /Committed/.test(l)).sort();
    assert.deepEqual(committed(after), committed(before));
  });
});
