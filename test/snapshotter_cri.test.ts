/**
 * The remote-snapshot path end to end with a real containerd 1.6: the test plays kubelet (CRI
 * `ImageService.PullImage`), containerd's unpacker hands our snapshotter the layer labels, and
 * a test {@link FileSystem} (read-only bind mounts of pre-extracted layers, standing in for the
 * lazy eStargz filesystem) serves the layers it knows. Those become remote snapshots that
 * containerd never downloads; the others fall back, per layer, to ordinary snapshots.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { defaultConfig } from "../src/config/mod.ts";
import { Logger, setLogSink } from "../src/log/mod.ts";
import { type Daemon, startDaemon } from "../src/service/mod.ts";
import { REMOTE_LABEL, REMOTE_SNAPSHOT_LOG_KEY } from "../src/snapshot/mod.ts";
import {
  busyboxLayer,
  cleanupDir,
  type Containerd,
  goArch,
  startContainerd,
  tarArchive,
  type TarEntry,
} from "./_containerd.ts";
import { pushImage, startRegistry, type TestRegistry } from "./_registry.ts";
import { BindLayerFs } from "./snapshotter_bindfs.ts";
import { criPull } from "./_cri.ts";

/** Writes a layer's entries into `dir`, as unpacking the layer would. */
async function extract(entries: readonly TarEntry[], dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.type === "dir") await fs.mkdir(p, { recursive: true, mode: e.mode ?? 0o755 });
    else if (e.type === "symlink") await fs.symlink(e.target, p);
    else await fs.writeFile(p, e.data, { mode: e.mode ?? 0o644 });
  }
}

const sha256 = (d: Uint8Array): string => `sha256:${createHash("sha256").update(d).digest("hex")}`;

let dir: string;
let reg: TestRegistry | undefined;
let daemon: Daemon | undefined;
let ctd: Containerd | undefined;
const rfs = new BindLayerFs();
const lines: string[] = [];
let restoreSink: ((l: string) => void) | undefined;
const daemonOpts = () => ({
  address: path.join(dir, "stargz.sock"),
  root: path.join(dir, "stargz-root"),
  config: defaultConfig(),
  log: new Logger({ test: "cri" }),
  fileSystem: rfs,
});

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "sgz-cri-"));
  restoreSink = setLogSink((l) => lines.push(l));
  reg = await startRegistry({ port: 15171 });
  daemon = await startDaemon(daemonOpts());
  ctd = await startContainerd({ dir, snapshotterAddress: daemonOpts().address });
});

after(async () => {
  await ctd?.stop();
  await daemon?.stop();
  await reg?.stop();
  if (restoreSink) setLogSink(restoreSink);
  await cleanupDir(dir);
});

describe("CRI pull through the stargz snapshotter", () => {
  let ref: string;
  let layers: string[];

  before(async () => {
    const contents = [
      await busyboxLayer(),
      [{ type: "file", name: "remote.txt", data: "served remotely\n" }] as TarEntry[],
      [{ type: "file", name: "local.txt", data: "unpacked by containerd\n" }] as TarEntry[],
    ];
    const tars = contents.map((c) => tarArchive(c));
    const blobs = tars.map((t) => gzipSync(t));
    layers = blobs.map(sha256);
    // Layers 0 and 1 are "remote"; layer 2 is not (as a plain gzip layer would not be).
    for (const i of [0, 1]) {
      const layerDir = path.join(dir, `layer${i}`);
      await extract(contents[i]!, layerDir);
      rfs.layers.set(layers[i]!, layerDir);
    }
    const pushed = await pushImage(reg!, "cri/app", "v1", {
      layers: blobs.map((data) => ({ data })),
      config: {
        architecture: goArch(),
        os: "linux",
        config: { Cmd: ["/bin/sh"], Env: ["PATH=/bin"] },
        rootfs: { type: "layers", diff_ids: tars.map(sha256) },
      },
      platform: { os: "linux", architecture: goArch() },
    });
    ref = pushed.ref;
  });

  const run = async (id: string): Promise<string> =>
    await ctd!.runStargz(ref, id, ["/bin/sh", "-c", "cat /remote.txt /local.txt; echo done"], {
      timeoutMs: 120_000,
    });

  it("mounts known layers remotely, falls back for the others, and runs the container", async () => {
    const imageRef = await criPull(ctd!.address, ref);
    assert.match(imageRef, /^sha256:/);

    const decisions = lines.map((l) => JSON.parse(l)).filter((l) => REMOTE_SNAPSHOT_LOG_KEY in l);
    assert.deepEqual(decisions.map((d) => d[REMOTE_SNAPSHOT_LOG_KEY]), ["true", "true", "false"]);
    assert.match(String(decisions[2].reason), /is not remote/);

    const infos = await daemon!.snapshotter.list(["kind==committed"]);
    const remote = infos.filter((i) => i.labels[REMOTE_LABEL] === "remote snapshot");
    assert.deepEqual(
      remote.map((i) => i.labels["containerd.io/snapshot/cri.layer-digest"]).sort(),
      [layers[0], layers[1]].sort(),
    );
    assert.equal(infos.length, 3);

    // containerd fetched only the layer it had to unpack itself.
    const content = await ctd!.ctrOk(["content", "ls", "-q"], { namespace: "k8s.io" });
    assert.ok(!content.includes(layers[0]!), content);
    assert.ok(!content.includes(layers[1]!), content);
    assert.ok(content.includes(layers[2]!), content);

    const suffix = randomUUID().slice(0, 8);
    assert.equal(await run(`cri1-${suffix}`), "served remotely\nunpacked by containerd\ndone\n");
  });

  it("restores the remote layers when the daemon restarts", async () => {
    await daemon!.stop();
    assert.equal(rfs.mounted.size, 0, "stop unmounts the remote layers");
    daemon = await startDaemon(daemonOpts());
    const report = await daemon.snapshotter.restored;
    assert.equal(report.restored.length, 2);
    assert.equal(rfs.mounted.size, 2);
    const suffix = randomUUID().slice(0, 8);
    assert.equal(await run(`cri2-${suffix}`), "served remotely\nunpacked by containerd\ndone\n");
  });
});
