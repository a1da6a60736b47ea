/**
 * Learned prefetch end to end: a real containerd with our daemon pulls an eStargz image
 * through CRI and runs a container with runc; the daemon records which files each layer served
 * in the container's first seconds. A second daemon on a fresh root that kept only the profile
 * store (and a fresh containerd) prefetches those files when it mounts the layers, so they are
 * local before the container's first read. `stargz optimize --profile` turns the same profiles
 * into an image whose recorded files sit before `.prefetch.landmark`.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupDir, startContainerd, startStargz, waitUntil } from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import { openBlob } from "../src/estargz/mod.ts";
import { runCli } from "./_cli.ts";
import { estargzLayer, makeBusyboxRoot, patternBytes, pushLayers, tarDir } from "./_images.ts";
import { startRegistry } from "./_registry.ts";
import type { PushedImage, TestRegistry } from "./_registry.ts";

let dir: string;
let reg: TestRegistry | undefined;
let image: PushedImage;
const big = patternBytes(2 << 20, 5);
const bigSum = createHash("sha256").update(big).digest("hex");
const script = "cat /data/hello; sha256sum /data/big";

interface AdminLayer {
  digest: string;
  startup: {
    fetchedBeforeFirstRead?: number;
    profile?: { files: number; found: number; bytes: number; done: boolean };
    recording: boolean;
  };
}

function adminGet<T>(socket: string, p: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: socket, path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(JSON.parse(body) as T));
    }).on("error", reject);
  });
}

/** A daemon and containerd under `sub` of the test directory, the daemon's root given. */
async function start(
  sub: string,
  root: string,
  extraConfig = "",
): Promise<{ daemon: StargzProcess; ctd: Containerd; admin: string; stop(): Promise<void> }> {
  const d = path.join(dir, sub);
  fs.mkdirSync(d, { recursive: true });
  const admin = path.join(d, "admin.sock");
  const config = path.join(d, "config.toml");
  fs.writeFileSync(
    config,
    `${extraConfig}[admin]\naddress = "${admin}"\n\n[prefetch_profile]\nwindow_sec = 2\n`,
  );
  const daemon = await startStargz({ dir: d, root, args: ["--config", config] });
  const ctd = await startContainerd({ dir: d, snapshotterAddress: daemon.address });
  return {
    daemon,
    ctd,
    admin,
    async stop() {
      await ctd.stop();
      await daemon.stop();
    },
  };
}

const runIn = (ctd: Containerd, ref = image.ref): Promise<string> =>
  ctd.ctrOk([
    "run",
    "--rm",
    "--snapshotter",
    "stargz",
    ref,
    `learn-${randomUUID().slice(0, 8)}`,
    "/bin/sh",
    "-c",
    script,
  ], { namespace: "k8s.io", timeoutMs: 120_000 });

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-learn-"));
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  tarDir(root, path.join(dir, "busybox.tar"));
  const extra = path.join(dir, "extra");
  fs.mkdirSync(path.join(extra, "data"), { recursive: true });
  fs.writeFileSync(path.join(extra, "data", "hello"), "hello learned\n");
  fs.writeFileSync(path.join(extra, "data", "big"), big);
  fs.writeFileSync(path.join(extra, "data", "unused"), patternBytes(1 << 20, 6));
  tarDir(extra, path.join(dir, "extra.tar"));
  reg = await startRegistry();
  image = await pushLayers(reg, "learn/app", "v1", [
    await estargzLayer(path.join(dir, "busybox.tar")),
    await estargzLayer(path.join(dir, "extra.tar")),
  ]);
});

after(async () => {
  await reg?.stop();
  await cleanupDir(dir);
});

describe("learned prefetch with containerd", () => {
  it("records a container's reads per layer and prefetches them on the next mount", async () => {
    const firstRoot = path.join(dir, "root1");
    const first = await start("one", firstRoot);
    try {
      await criPull(first.ctd.address, image.ref);
      assert.equal(await runIn(first.ctd), `hello learned\n${bigSum}  /data/big\n`);
      await waitUntil(
        async () =>
          (await adminGet<unknown[]>(first.admin, "/v1/profiles")).length ===
            image.layers.length,
        30_000,
        "a profile of every layer",
      );
    } finally {
      await first.stop();
    }

    // A fresh root that kept only the profile store: no snapshots, no chunk cache.
    const secondRoot = path.join(dir, "root2");
    fs.mkdirSync(secondRoot, { recursive: true });
    for (const f of fs.readdirSync(firstRoot)) {
      if (f.startsWith("prefetch_profiles.db")) {
        fs.copyFileSync(path.join(firstRoot, f), path.join(secondRoot, f));
      }
    }
    const second = await start("two", secondRoot);
    try {
      const profiles = await adminGet<{ layer: string; files: number }[]>(
        second.admin,
        "/v1/profiles",
      );
      assert.deepEqual(
        profiles.map((p) => p.layer).sort(),
        image.layers.map((l) => l.digest).sort(),
      );
      await criPull(second.ctd.address, image.ref);
      // The replay runs while containerd finishes the pull; the container starts after it.
      await waitUntil(
        async () =>
          (await adminGet<AdminLayer[]>(second.admin, "/v1/layers")).every((l) =>
            l.startup.profile?.done
          ),
        30_000,
        "the profiles' prefetch",
      );
      assert.equal(await runIn(second.ctd), `hello learned\n${bigSum}  /data/big\n`);
      const layers = await adminGet<AdminLayer[]>(second.admin, "/v1/layers");
      const data = layers.find((l) => l.digest === image.layers[1].digest)!;
      const replay = data.startup.profile!;
      assert.ok(replay.found >= 2, JSON.stringify(data.startup));
      assert.ok(replay.bytes >= big.length / 2, "the big file came with the profile");
      assert.ok(
        (data.startup.fetchedBeforeFirstRead ?? 0) >= replay.bytes,
        `fetched before the first read: ${JSON.stringify(data.startup)}`,
      );
      for (const l of layers) assert.equal(l.startup.recording, false);
    } finally {
      await second.stop();
    }
  });

  it("optimize writes the recorded files before the prefetch landmark; the image verifies, runs and prefetches them", async () => {
    // The profiles recorded by the first daemon of the test above.
    const dst = `${reg!.host}/learn/app:optimized`;
    const r = await runCli(["optimize", "--profile", path.join(dir, "root1"), image.ref, dst]);
    assert.equal(r.code, 0, r.stderr);
    const manifest = await (await fetch(`${reg!.url}/v2/learn/app/manifests/optimized`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    })).json() as { layers: { digest: string; annotations: Record<string, string> }[] };
    const data = manifest.layers[1];
    const blobFile = path.join(dir, "optimized-data.blob");
    fs.writeFileSync(
      blobFile,
      new Uint8Array(
        await (await fetch(`${reg!.url}/v2/learn/app/blobs/${data.digest}`)).arrayBuffer(),
      ),
    );
    const tocDigest = data.annotations["containerd.io/snapshot/stargz/toc.digest"];
    const verify = await runCli(["verify", "--toc-digest", tocDigest, blobFile]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(JSON.parse(verify.stdout).ok, true);
    const bytes = fs.readFileSync(blobFile);
    const blob = await openBlob({
      size: bytes.length,
      read: (o, l) => Promise.resolve(new Uint8Array(bytes.subarray(o, o + l))),
    });
    const names = (await blob.readToc()).entries.filter((e) => e.type !== "chunk").map((e) =>
      e.name
    );
    const landmark = names.indexOf(".prefetch.landmark");
    assert.ok(landmark > 0, names.join(" "));
    for (const f of ["data/hello", "data/big"]) {
      assert.ok(names.indexOf(f) < landmark, `${f} before the landmark: ${names.join(" ")}`);
    }
    assert.ok(names.indexOf("data/unused") > landmark, "a file never read stays after it");

    // A daemon without profiles and without background fetch: what is local is the landmark's.
    const third = await start(
      "three",
      path.join(dir, "root3"),
      "no_background_fetch = true\n\n",
    );
    try {
      await criPull(third.ctd.address, dst);
      const landmarkOffset = blob.entry(".prefetch.landmark")!.offset;
      await waitUntil(
        async () =>
          (await adminGet<(AdminLayer & { state: { fetchedSize: number } })[]>(
            third.admin,
            "/v1/layers",
          )).some((l) => l.digest === data.digest && l.state.fetchedSize >= landmarkOffset),
        30_000,
        "the landmark prefetch",
      );
      assert.equal(await runIn(third.ctd, dst), `hello learned\n${bigSum}  /data/big\n`);
      const layer = (await adminGet<AdminLayer[]>(third.admin, "/v1/layers"))
        .find((l) => l.digest === data.digest)!;
      assert.ok(
        (layer.startup.fetchedBeforeFirstRead ?? 0) >= landmarkOffset,
        JSON.stringify(layer.startup),
      );
    } finally {
      await third.stop();
    }
  });
});
