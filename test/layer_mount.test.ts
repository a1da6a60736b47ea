/**
 * The lazy layer filesystem end to end: layers built with real tools, converted by our
 * converter, mounted by `stargz mount` (from a local file and from a real registry) and checked
 * with real tools against the same tar extracted by GNU tar.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { ok, sh, tempDir } from "./_fuse.ts";
import { fileBlobReader, openBlob } from "../src/estargz/mod.ts";
import { estargzLayer, makeBusyboxRoot, patternBytes, pushLayers } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { inodeGroups, isMounted, listTree, makeRichTree, mountCli, tarTree } from "./_layer.ts";
import { MEDIA, pushBlob, pushManifest, startFaultProxy, startRegistry } from "./_registry.ts";
import type { FaultProxy, PushedImage, TestRegistry } from "./_registry.ts";

const CHUNK = 65536;
let tmp: string;
let expected: string[];
let expectedGroups: string[];
let reg: TestRegistry | undefined;

/** Pushes an image whose one layer is `data` (which need not even decompress). */
async function pushRawLayer(
  r: TestRegistry,
  repo: string,
  data: Uint8Array,
  like: BuiltLayer,
): Promise<{ ref: string; layers: { digest: string }[] }> {
  const digest = await pushBlob(r, repo, data);
  const config = new TextEncoder().encode(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      rootfs: { type: "layers", diff_ids: [like.diffID] },
    }),
  );
  const configDigest = await pushBlob(r, repo, config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: MEDIA.ociConfig, digest: configDigest, size: config.length },
    layers: [{
      mediaType: MEDIA.ociLayerGzip,
      digest,
      size: data.length,
      annotations: like.annotations,
    }],
  });
  await pushManifest(r, repo, "v1", MEDIA.ociManifest, manifest);
  return { ref: `${r.host}/${repo}:v1`, layers: [{ digest }] };
}

function mp(name: string): string {
  const dir = path.join(tmp, "mnt", name);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

before(async () => {
  tmp = await tempDir("stargz-layer-e2e-");
  const src = path.join(tmp, "src");
  await makeRichTree(src, CHUNK);
  await tarTree(src, path.join(tmp, "rich.tar"));
  // The reference: what GNU tar extracts from the same tar.
  const ref = path.join(tmp, "extracted");
  fs.mkdirSync(ref);
  await ok([
    "tar",
    "--xattrs",
    "--xattrs-include=*",
    "--numeric-owner",
    "--same-owner",
    "-xpf",
    path.join(tmp, "rich.tar"),
    "-C",
    ref,
  ]);
  expected = await listTree(ref);
  expectedGroups = await inodeGroups(ref);
});

after(async () => {
  const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) =>
    l.split(" ")[4]
  ).filter((m) => m?.startsWith(tmp));
  for (const m of mounts.reverse()) await sh(["umount", "-l", m]);
  await reg?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("stargz mount (local blob)", () => {
  for (
    const variant of [
      { name: "gzip", opts: { chunkSize: CHUNK } },
      { name: "gzip-packed", opts: { chunkSize: CHUNK, minChunkSize: 16384 } },
      { name: "zstd", opts: { chunkSize: CHUNK, format: "zstd" as const } },
      {
        name: "prioritized",
        opts: { chunkSize: CHUNK, prioritizedFiles: ["etc/app.conf", "names/hard1", "big/multi"] },
      },
    ]
  ) {
    it(`serves the same tree as the extracted tar (${variant.name})`, async () => {
      const layer = await estargzLayer(path.join(tmp, "rich.tar"), variant.opts);
      const blob = path.join(tmp, `${variant.name}.blob`);
      fs.writeFileSync(blob, layer.data);
      const dir = mp(variant.name);
      const m = await mountCli([
        "--toc-digest",
        layer.annotations!["containerd.io/snapshot/stargz/toc.digest"],
        blob,
      ], dir);
      try {
        assert.deepEqual(await listTree(dir, { skip: /^\.stargz-snapshotter/ }), expected);
        assert.deepEqual(await inodeGroups(dir), expectedGroups);
        const ls = await ok(["ls", "-a", dir]);
        assert.doesNotMatch(ls, /stargz-snapshotter|landmark|stargz\.index\.json/);
        assert.equal((await sh(["touch", path.join(dir, "new")])).code !== 0, true, "read-only");
      } finally {
        const r = await m.stop();
        assert.equal(r.code, 0, r.stderr);
      }
      assert.equal(isMounted(dir), false);
    });
  }

  it("refuses a blob whose TOC does not match --toc-digest", async () => {
    const layer = await estargzLayer(path.join(tmp, "rich.tar"), { chunkSize: CHUNK });
    const blob = path.join(tmp, "wrong.blob");
    fs.writeFileSync(blob, layer.data);
    await assert.rejects(
      mountCli(["--toc-digest", "sha256:" + "0".repeat(64), blob], mp("wrong")),
      /TOC digest|digest/i,
    );
    assert.equal(isMounted(path.join(tmp, "mnt", "wrong")), false);
  });

  it("stacks two layers with overlayfs: whiteouts and opaque directories apply", async () => {
    const lower = path.join(tmp, "lower");
    fs.mkdirSync(path.join(lower, "keep"), { recursive: true });
    fs.mkdirSync(path.join(lower, "opaque"), { recursive: true });
    fs.writeFileSync(path.join(lower, "gone"), "lower");
    fs.writeFileSync(path.join(lower, "keep/file"), "lower");
    fs.writeFileSync(path.join(lower, "opaque/old"), "lower");
    const upper = path.join(tmp, "upper");
    fs.mkdirSync(path.join(upper, "opaque"), { recursive: true });
    fs.writeFileSync(path.join(upper, ".wh.gone"), "");
    fs.writeFileSync(path.join(upper, "opaque/.wh..wh..opq"), "");
    fs.writeFileSync(path.join(upper, "opaque/new"), "upper");
    fs.writeFileSync(path.join(upper, "added"), "upper");
    const mounts = [];
    try {
      for (const [name, dir] of [["lower", lower], ["upper", upper]]) {
        await tarTree(dir, path.join(tmp, `${name}.tar`));
        const l = await estargzLayer(path.join(tmp, `${name}.tar`), {});
        fs.writeFileSync(path.join(tmp, `${name}.blob`), l.data);
        mounts.push(await mountCli([path.join(tmp, `${name}.blob`)], mp(`ov-${name}`)));
      }
      const upperMount = path.join(tmp, "mnt", "ov-upper");
      assert.equal(
        (await ok(["stat", "-c", "%F %t:%T", path.join(upperMount, "gone")])).trim(),
        "character special file 0:0",
      );
      assert.match(
        await ok([
          "getfattr",
          "--absolute-names",
          "-n",
          "trusted.overlay.opaque",
          path.join(upperMount, "opaque"),
        ]),
        /opaque="y"/,
      );
      const merged = mp("merged");
      await ok([
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        `lowerdir=${upperMount}:${path.join(tmp, "mnt", "ov-lower")}`,
        merged,
      ]);
      try {
        assert.deepEqual((await ok(["ls", merged])).trim().split("\n").sort(), [
          "added",
          "keep",
          "opaque",
        ]);
        assert.deepEqual((await ok(["ls", path.join(merged, "opaque")])).trim().split("\n"), [
          "new",
        ]);
        assert.equal(fs.readFileSync(path.join(merged, "keep/file"), "utf8"), "lower");
      } finally {
        await ok(["umount", merged]);
      }
    } finally {
      for (const m of mounts.reverse()) await m.stop();
    }
  });
});

describe("stargz mount (registry)", () => {
  before(async () => {
    reg = await startRegistry();
  });

  it("serves the rich tree and a busybox rootfs from the registry as GNU tar extracts them", async () => {
    const bb = path.join(tmp, "bb-root");
    makeBusyboxRoot(bb);
    await tarTree(bb, path.join(tmp, "bb.tar"));
    const bbRef = path.join(tmp, "bb-extracted");
    fs.mkdirSync(bbRef);
    await ok([
      "tar",
      "--numeric-owner",
      "--same-owner",
      "-xpf",
      path.join(tmp, "bb.tar"),
      "-C",
      bbRef,
    ]);
    for (
      const [name, tar, want] of [["rich", "rich.tar", expected], [
        "busybox",
        "bb.tar",
        await listTree(bbRef),
      ]] as const
    ) {
      const layer = await estargzLayer(path.join(tmp, tar), { chunkSize: CHUNK });
      const image = await pushLayers(reg!, `tree/${name}`, "v1", [layer]);
      const dir = mp(`reg-${name}`);
      const m = await mountCli([image.ref, "--layer", image.layers[0].digest], dir);
      try {
        assert.deepEqual(await listTree(dir, { skip: /^\.stargz-snapshotter/ }), want, name);
      } finally {
        assert.equal((await m.stop()).code, 0);
      }
    }
  });

  it("mounts a layer from the registry and fetches it completely in the background", async () => {
    const src = path.join(tmp, "reg-src");
    fs.mkdirSync(src);
    for (let i = 0; i < 40; i++) {
      fs.writeFileSync(path.join(src, `f${i}`), patternBytes(50_000 + i, i + 1));
    }
    await tarTree(src, path.join(tmp, "reg.tar"));
    const layer = await estargzLayer(path.join(tmp, "reg.tar"), { chunkSize: CHUNK });
    const image = await pushLayers(reg!, "lazy/app", "esgz", [layer]);
    const dir = mp("registry");
    const m = await mountCli([image.ref, "--layer", image.layers[0].digest], dir);
    try {
      const stateFile = path.join(dir, ".stargz-snapshotter", `${image.layers[0].digest}.json`);
      const sums = await ok(["sh", "-c", `cd ${dir} && sha256sum f*`]);
      const want = await ok(["sh", "-c", `cd ${src} && sha256sum f*`]);
      assert.equal(sums, want);
      const globbed = await ok(["sh", "-c", `cat ${dir}/.stargz-snapshotter/*.json`]);
      assert.match(globbed, /"fetchedPercent"/);
      let state = JSON.parse(fs.readFileSync(stateFile, "utf8"));
      const deadline = Date.now() + 30_000;
      while (state.fetchedPercent < 100 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        state = JSON.parse(fs.readFileSync(stateFile, "utf8"));
      }
      assert.deepEqual(Object.keys(state), ["digest", "size", "fetchedSize", "fetchedPercent"]);
      assert.equal(state.digest, image.layers[0].digest);
      assert.equal(state.size, layer.data.length);
      assert.equal(state.fetchedSize, state.size);
    } finally {
      assert.equal((await m.stop()).code, 0);
    }
  });
});

describe("stargz mount (faults)", () => {
  let image: PushedImage;
  let layer: BuiltLayer;
  let proxy: FaultProxy;
  let config: string;
  const files = Array.from({ length: 12 }, (_, i) => patternBytes(40_000 + i * 1000, 100 + i));

  // The fault proxy runs in this process: reads of the mount must not block its event loop.
  before(async () => {
    reg ??= await startRegistry();
    const src = path.join(tmp, "fault-src");
    fs.mkdirSync(src);
    files.forEach((f, i) => fs.writeFileSync(path.join(src, `f${i}`), f));
    await tarTree(src, path.join(tmp, "fault.tar"));
    layer = await estargzLayer(path.join(tmp, "fault.tar"), { chunkSize: 16384 });
    image = await pushLayers(reg!, "lazy/fault", "v1", [layer]);
    proxy = await startFaultProxy(reg!.url);
    // Fail fast: one retry with short waits, so an unreachable registry answers EIO quickly.
    config = path.join(tmp, "fault.toml");
    fs.writeFileSync(
      config,
      "[blob]\nmax_retries = 1\nmin_wait_msec = 10\nmax_wait_msec = 50\nfetching_timeout_sec = 5\n" +
        '[cache]\nmax_size = "64KiB"\nmemory_size = "32KiB"\n',
    );
  });
  after(async () => {
    await proxy?.stop();
  });

  const viaProxy = () => image.ref.replace(reg!.host, proxy.host);
  const sum = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

  it("answers EIO while the registry is down, reports it, and recovers when it is back", async () => {
    const dir = mp("fault-down");
    const m = await mountCli([
      "--config",
      config,
      "--no-background-fetch",
      "--no-prefetch",
      viaProxy(),
      "--layer",
      image.layers[0].digest,
    ], dir);
    try {
      assert.equal((await fsp.readFile(path.join(dir, "f0"))).length, files[0].length);
      proxy.rule = () => ({ kind: "status", status: 503 });
      const failed = await sh(["cat", path.join(dir, "f1")]);
      assert.notEqual(failed.code, 0);
      assert.match(failed.stderr, /Input\/output error/);
      const state = JSON.parse(
        fs.readFileSync(
          path.join(dir, ".stargz-snapshotter", `${image.layers[0].digest}.json`),
          "utf8",
        ),
      );
      assert.match(state.error, /503|registry|f1/);
      proxy.rule = () => ({ kind: "pass" });
      assert.equal(
        sum(await fsp.readFile(path.join(dir, "f1"))),
        sum(files[1]),
        "a later read retries and succeeds",
      );
    } finally {
      proxy.rule = () => ({ kind: "pass" });
      await m.stop();
    }
  });

  it("never serves the bytes of a chunk corrupted in the registry", async () => {
    const blob = Buffer.from(layer.data);
    const tmpBlob = path.join(tmp, "fault.blob");
    fs.writeFileSync(tmpBlob, blob);
    const br = await fileBlobReader(tmpBlob);
    const chunk = (await openBlob(br)).chunkAt("f3", 20_000)!;
    await br.close();
    blob[Math.floor((chunk.compressedOffset + chunk.compressedEnd) / 2)] ^= 0x55;
    const bad = await pushRawLayer(reg!, "lazy/corrupt", new Uint8Array(blob), layer);
    const dir = mp("fault-corrupt");
    const m = await mountCli([
      "--config",
      config,
      "--no-background-fetch",
      "--no-prefetch",
      "--toc-digest",
      layer.annotations!["containerd.io/snapshot/stargz/toc.digest"],
      bad.ref,
      "--layer",
      bad.layers[0].digest,
    ], dir);
    try {
      const r = await sh([
        "dd",
        `if=${path.join(dir, "f3")}`,
        "of=/dev/null",
        "bs=4096",
        "skip=4",
        "count=2",
      ]);
      assert.notEqual(r.code, 0, "the corrupted chunk is refused");
      assert.match(r.stderr, /Input\/output error/);
      assert.equal(
        sum(await fsp.readFile(path.join(dir, "f4"))),
        sum(files[4]),
        "other files still serve",
      );
    } finally {
      await m.stop();
    }
  });

  it("serves every file correctly with a cache bound far smaller than the layer", async () => {
    const dir = mp("fault-small-cache");
    const cacheDir = path.join(tmp, "small-cache");
    const m = await mountCli([
      "--config",
      config,
      "--cache-dir",
      cacheDir,
      viaProxy(),
      "--layer",
      image.layers[0].digest,
    ], dir);
    try {
      for (let round = 0; round < 2; round++) {
        for (const [i, f] of files.entries()) {
          assert.equal(sum(await fsp.readFile(path.join(dir, `f${i}`))), sum(f), `f${i}`);
        }
      }
      const sizes = (await ok(["find", cacheDir, "-type", "f", "-printf", "%s\n"])).trim().split(
        "\n",
      );
      const used = sizes.reduce((a, b) => a + Number(b), 0);
      assert.ok(used <= 64 * 1024, `cache holds ${used} bytes in ${sizes.length} files`);
    } finally {
      await m.stop();
    }
  });
});
