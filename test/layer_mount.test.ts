/**
 * The lazy layer filesystem end to end: layers built with real tools, converted by our
 * converter, mounted by `stargz mount` (from a local file and from a real registry) and checked
 * with real tools against the same tar extracted by GNU tar.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ok, sh, tempDir } from "./_fuse.ts";
import { estargzLayer, patternBytes, pushLayers } from "./_images.ts";
import { inodeGroups, isMounted, listTree, makeRichTree, mountCli, tarTree } from "./_layer.ts";
import { startRegistry } from "./_registry.ts";
import type { TestRegistry } from "./_registry.ts";

const CHUNK = 65536;
let tmp: string;
let expected: string[];
let expectedGroups: string[];
let reg: TestRegistry | undefined;

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
