/**
 * A converted image still works the ordinary way: `stargz convert` turns a plain gzip image in
 * a real registry into eStargz, then a real containerd pulls it with its default (overlayfs)
 * snapshotter — which checks every layer against the config's diff_ids while unpacking — and
 * runs a container from it.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as zlib from "node:zlib";
import { runCli } from "./_cli.ts";
import {
  busyboxLayer,
  cleanupDir,
  type Containerd,
  goArch,
  startContainerd,
  tarArchive,
} from "./_containerd.ts";
import { pushImage, startRegistry, type TestRegistry } from "./_registry.ts";

let dir: string;
let reg: TestRegistry | undefined;
let ctd: Containerd | undefined;

before(async () => {
  dir = await fs.mkdtemp("/tmp/sgzrc-");
  reg = await startRegistry();
  const layers = [
    tarArchive(await busyboxLayer()),
    tarArchive([{ type: "file", name: "hello.txt", data: "hello from a converted layer\n" }]),
  ].map((t) => ({ data: new Uint8Array(zlib.gzipSync(t)) }));
  await pushImage(reg, "app", "plain", {
    layers,
    platform: { os: "linux", architecture: goArch() },
  });
  ctd = await startContainerd({ dir, snapshotterAddress: path.join(dir, "unused.sock") });
});

after(async () => {
  await ctd?.stop();
  await reg?.stop();
  if (dir) await cleanupDir(dir);
});

describe("converted image pulled the ordinary way", () => {
  it("unpacks with overlayfs and runs", async () => {
    const conv = await runCli(["convert", `${reg!.host}/app:plain`, `${reg!.host}/app:esgz`]);
    assert.equal(conv.code, 0, conv.stderr);
    const ref = `${reg!.host}/app:esgz`;
    await ctd!.ctrOk(["images", "pull", "--plain-http", ref], { timeoutMs: 120_000 });
    const out = await ctd!.ctrOk(
      ["run", "--rm", ref, `esgz-${process.pid}`, "/bin/sh", "-c", "cat /hello.txt; echo ok"],
      { timeoutMs: 120_000 },
    );
    assert.equal(out, "hello from a converted layer\nok\n");
  });
});
