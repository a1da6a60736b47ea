/**
 * LayerFileSystem, the snapshotter's remote filesystem, in this process against a real registry
 * (behind a counting proxy): verification rules, neighbour resolution and prefetch, check and
 * unmount. Reads of the mounts use child processes only: this process serves them.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig } from "../src/config/mod.ts";
import { openBlob } from "../src/estargz/mod.ts";
import { ChunkCache } from "../src/fs/_chunk_cache.ts";
import { LayerReader } from "../src/fs/_layer_reader.ts";
import type { Config } from "../src/config/mod.ts";
import { LayerFileSystem, LayerMountError, ProfileStore } from "../src/fs/mod.ts";
import {
  SKIP_VERIFY_LABEL,
  STARGZ_DIGEST_LABEL,
  STARGZ_LAYERS_LABEL,
  STARGZ_REFERENCE_LABEL,
  TOC_DIGEST_LABEL,
} from "../src/labels/mod.ts";
import { Logger } from "../src/log/mod.ts";
import { parseDigest, RegistryClient, type RegistryClientOptions } from "../src/registry/mod.ts";
import { ok, sh, tempDir } from "./_fuse.ts";
import { estargzLayer, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { isMounted } from "./_layer.ts";
import { startFaultProxy, startRegistry } from "./_registry.ts";
import type { FaultProxy, PushedImage, TestRegistry } from "./_registry.ts";

let tmp: string;
let reg: TestRegistry;
let proxy: FaultProxy;
let image: PushedImage;
let layers: BuiltLayer[];

function config(over: (c: Config) => void = () => {}): Config {
  const c = defaultConfig();
  c.blob.max_retries = 1;
  c.blob.max_wait_msec = 50;
  over(c);
  return c;
}

async function layerFs(
  name: string,
  c: Config,
  registry: RegistryClientOptions = {},
): Promise<LayerFileSystem> {
  return await LayerFileSystem.create({
    root: path.join(tmp, name),
    config: c,
    registry: new RegistryClient({ blob: { maxRetries: 1, maxWaitMsec: 50 }, ...registry }),
    log: new Logger({ test: name }),
  });
}

function labelsFor(i: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    [STARGZ_REFERENCE_LABEL]: image.ref.replace(reg.host, proxy.host),
    [STARGZ_DIGEST_LABEL]: image.layers[i].digest,
    [STARGZ_LAYERS_LABEL]: image.layers.map((l) => l.digest).join(","),
    [TOC_DIGEST_LABEL]: layers[i].annotations!["containerd.io/snapshot/stargz/toc.digest"],
    ...extra,
  };
}

function mountpoint(name: string): string {
  const d = path.join(tmp, "mnt", name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

const blobGets = (digest: string) =>
  proxy.requests.filter((r) => r.method === "GET" && r.url.includes(digest)).length;

/** Requests of any method for blob `digest` at `p`. */
const blobRequests = (p: FaultProxy, digest: string) =>
  p.requests.filter((r) => r.url.includes(`/blobs/${digest}`));

/** A mount that fetches nothing after its Prepare (so the requests counted are the mount's). */
const mountOnly = (c: Config) => {
  c.noprefetch = true;
  c.no_background_fetch = true;
};

before(async () => {
  tmp = await tempDir("stargz-layerfs-");
  layers = [];
  for (let i = 0; i < 3; i++) {
    const d = path.join(tmp, `src${i}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, `file${i}`), `layer ${i}\n`.repeat(1000));
    tarDir(d, path.join(tmp, `l${i}.tar`));
    layers.push(
      await estargzLayer(path.join(tmp, `l${i}.tar`), { prioritizedFiles: [`file${i}`] }),
    );
  }
  reg = await startRegistry();
  image = await pushLayers(reg, "layerfs/app", "v1", layers);
  proxy = await startFaultProxy(reg.url);
});

after(async () => {
  for (const l of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const m = l.split(" ")[4];
    if (m?.startsWith(tmp)) await sh(["umount", "-l", m]);
  }
  await proxy?.stop();
  await reg?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("LayerFileSystem", () => {
  it("refuses a layer without TOC digest unless verification is relaxed", async () => {
    const strict = await layerFs("strict", config());
    const noToc = labelsFor(0);
    delete noToc[TOC_DIGEST_LABEL];
    await assert.rejects(strict.mount(mountpoint("strict"), noToc), LayerMountError);
    await assert.rejects(
      strict.mount(mountpoint("strict"), { ...noToc, [SKIP_VERIFY_LABEL]: "true" }),
      /TOC digest/,
    );
    await assert.rejects(
      strict.mount(
        mountpoint("strict"),
        labelsFor(0, { [TOC_DIGEST_LABEL]: "sha256:" + "a".repeat(64) }),
      ),
      /digest/,
    );
    assert.equal(isMounted(path.join(tmp, "mnt", "strict")), false);

    const relaxed = await layerFs("relaxed", config((c) => (c.allow_no_verification = true)));
    const mp = mountpoint("relaxed");
    await relaxed.mount(mp, { ...noToc, [SKIP_VERIFY_LABEL]: "true" });
    assert.equal((await ok(["cat", path.join(mp, "file0")])).length, 8000);
    await relaxed.close();
    assert.equal(isMounted(mp), false, "close unmounts");
  });

  it("opens and prefetches the image's other layers before their Prepare, and checks mounts", async () => {
    const lfs = await layerFs("neighbours", config((c) => (c.no_background_fetch = true)));
    await lfs.mount(mountpoint("n0"), labelsFor(0));
    const deadline = Date.now() + 10_000;
    while (
      (blobGets(image.layers[1].digest) === 0 || blobGets(image.layers[2].digest) === 0) &&
      Date.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(
      blobGets(image.layers[2].digest) > 0,
      "the neighbour's blob was read ahead of its Prepare",
    );
    await new Promise((r) => setTimeout(r, 300));
    const before = blobGets(image.layers[2].digest);
    const mp2 = mountpoint("n2");
    await lfs.mount(mp2, labelsFor(2));
    await lfs.check(mp2, labelsFor(2));
    assert.equal((await ok(["cat", path.join(mp2, "file2")])).length, 8000);
    assert.equal(
      blobGets(image.layers[2].digest),
      before,
      "mounting and reading it needed no new request",
    );
    assert.deepEqual(
      lfs.mounted().map((m) => m.digest).sort(),
      [image.layers[0].digest, image.layers[2].digest].sort(),
    );
    await lfs.unmount(mp2);
    assert.equal(isMounted(mp2), false);
    await assert.rejects(lfs.check(mp2, labelsFor(2)), /no layer is mounted/);
    await lfs.close();
  });

  it("fails check while the registry is unreachable and passes again when it is back", async () => {
    const lfs = await layerFs(
      "check",
      config((c) => {
        c.blob.check_always = true;
        c.no_background_fetch = true;
      }),
    );
    const mp = mountpoint("check");
    await lfs.mount(mp, labelsFor(1));
    await lfs.check(mp, labelsFor(1));
    proxy.rule = () => ({ kind: "status", status: 503 });
    try {
      await assert.rejects(lfs.check(mp, labelsFor(1)));
    } finally {
      proxy.rule = () => ({ kind: "pass" });
    }
    await lfs.check(mp, labelsFor(1));
    await lfs.close();
  });

  it("mounts a layer with one registry request: size, footer and TOC from one suffix range", async () => {
    const lfs = await layerFs("one-request", config(mountOnly));
    const digest = image.layers[0].digest;
    const before = blobRequests(proxy, digest).length;
    const mp = mountpoint("one-request");
    await lfs.mount(mp, labelsFor(0, { [STARGZ_LAYERS_LABEL]: digest }));
    const sent = blobRequests(proxy, digest).slice(before);
    assert.deepEqual(sent.map((r) => `${r.method} ${r.headers.range}`), [
      "GET bytes=-524288",
    ]);
    assert.equal((await ok(["cat", path.join(mp, "file0")])).length, 8000);
    await lfs.close();
  });

  it("resolves a redirect with the same suffix read", async () => {
    const front = await startFaultProxy(reg.url);
    const storage = await startFaultProxy(reg.url);
    try {
      front.rule = (r) =>
        r.url.includes("/blobs/") ? { kind: "redirect", location: storage.url + r.url } : {
          kind: "pass",
        };
      const lfs = await layerFs("redirect", config(mountOnly));
      const digest = image.layers[1].digest;
      const mp = mountpoint("redirect");
      await lfs.mount(mp, {
        ...labelsFor(1, { [STARGZ_LAYERS_LABEL]: digest }),
        [STARGZ_REFERENCE_LABEL]: image.ref.replace(reg.host, front.host),
      });
      assert.equal(blobRequests(front, digest).length, 1, "one request to the registry");
      assert.deepEqual(blobRequests(storage, digest).map((r) => r.headers.range), [
        "bytes=-524288",
      ], "one request to the storage it redirects to");
      assert.equal((await ok(["cat", path.join(mp, "file1")])).length, 8000);
      await lfs.close();
    } finally {
      await front.stop();
      await storage.stop();
    }
  });

  for (
    const [how, rule] of [
      ["answers 416", { kind: "status", status: 416 }],
      ["strips the range and sends the whole blob", {
        kind: "pass",
        headers: { range: undefined },
      }],
    ] as const
  ) {
    it(`mounts through a proxy that ${how} to suffix ranges, and remembers the host`, async () => {
      const strict = await startFaultProxy(reg.url);
      try {
        strict.rule = (r) =>
          String(r.headers.range ?? "").startsWith("bytes=-") ? rule : { kind: "pass" };
        // Smaller than the blobs, so that a whole-blob 200 is a refusal, not the blob itself.
        const lfs = await layerFs(`refuse-${rule.kind}`, config(mountOnly), {
          tailReadBytes: 200,
        });
        for (const i of [0, 2]) {
          const mp = mountpoint(`refuse-${rule.kind}-${i}`);
          await lfs.mount(mp, {
            ...labelsFor(i, { [STARGZ_LAYERS_LABEL]: image.layers[i].digest }),
            [STARGZ_REFERENCE_LABEL]: image.ref.replace(reg.host, strict.host),
          });
          assert.equal((await ok(["cat", path.join(mp, `file${i}`)])).length, 8000);
        }
        const suffixReads = strict.requests.filter((r) =>
          String(r.headers.range ?? "").startsWith("bytes=-")
        );
        assert.equal(suffixReads.length, 1, "the second layer was located without trying again");
        await lfs.close();
      } finally {
        await strict.stop();
      }
    });
  }

  it("reads the rest of a TOC larger than the suffix read, and only that", async () => {
    const lfs = await layerFs("big-toc", config(mountOnly), { tailReadBytes: 100 });
    const digest = image.layers[2].digest;
    const before = blobRequests(proxy, digest).length;
    const mp = mountpoint("big-toc");
    await lfs.mount(mp, labelsFor(2, { [STARGZ_LAYERS_LABEL]: digest }));
    const sent = blobRequests(proxy, digest).slice(before).map((r) => String(r.headers.range));
    assert.equal(sent.length, 2, sent.join(" "));
    assert.equal(sent[0], "bytes=-100");
    const size = image.layers[2].size;
    const m = /^bytes=(\d+)-(\d+)$/.exec(sent[1]);
    assert.ok(m, sent[1]);
    assert.equal(Number(m[2]), size - 101, "the second read ends where the first began");
    assert.equal((await ok(["cat", path.join(mp, "file2")])).length, 8000);
    await lfs.close();
  });

  it("records the files a first mount reads and prefetches them when the layer is mounted again", async () => {
    const digest = image.layers[0].digest;
    const labels = labelsFor(0, { [STARGZ_LAYERS_LABEL]: digest });
    const first = await layerFs("learn", config(mountOnly));
    const mp1 = mountpoint("learn-1");
    await first.mount(mp1, labels);
    assert.equal(first.mounted()[0].startup.recording, true);
    assert.equal((await ok(["cat", path.join(mp1, "file0")])).length, 8000);
    // Closing ends the recording early (a short-lived container) and saves it.
    await first.close();

    // A restart with the cache gone: only the profile store is left under the root.
    fs.rmSync(path.join(tmp, "learn", "cache"), { recursive: true, force: true });
    const again = await layerFs("learn", config(mountOnly));
    assert.deepEqual(again.profiles?.list().map((p) => [p.layer, p.files]), [[digest, 1]]);
    const mp2 = mountpoint("learn-2");
    await again.mount(mp2, labels);
    const deadline = Date.now() + 10_000;
    while (!again.mounted()[0].startup.profile?.done && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const replay = again.mounted()[0].startup.profile;
    assert.equal(replay?.found, 1);
    assert.ok((replay?.bytes ?? 0) > 0, "the profiled file was fetched before any read");
    const gets = blobGets(digest);
    assert.equal((await ok(["cat", path.join(mp2, "file0")])).length, 8000);
    assert.equal(blobGets(digest), gets, "the read needed no request");
    const startup = again.mounted()[0].startup;
    assert.equal(startup.recording, false, "a layer with a profile is not recorded again");
    assert.ok((startup.fetchedBeforeFirstRead ?? 0) >= (replay?.bytes ?? 0));
    await again.close();
  });

  it("sends concurrent misses in different files of a layer to the registry as one request, on the mount's connection", async () => {
    const d = path.join(tmp, "coalesce-src");
    fs.mkdirSync(d);
    // Incompressible, and the files read (a, c, e) apart in the blob: three ranges.
    const files = ["a", "b", "c", "d", "e"].map((name) => {
      const data = new Uint8Array(randomBytes(100_000));
      fs.writeFileSync(path.join(d, name), data);
      return { name, data };
    }).filter((_, i) => i % 2 === 0);
    tarDir(d, path.join(tmp, "coalesce.tar"));
    const layer = await estargzLayer(path.join(tmp, "coalesce.tar"));
    const pushed = await pushLayers(reg, "layerfs/coalesce", "v1", [layer]);
    const digest = pushed.layers[0].digest;
    const remote = await new RegistryClient().openBlob(
      `${proxy.host}/layerfs/coalesce`,
      parseDigest(digest),
    );
    const blob = await openBlob(remote, { tail: remote.takeTail() });
    const cache = await ChunkCache.open(path.join(tmp, "coalesce-cache"), {
      maxDiskBytes: 0,
      maxMemoryBytes: 8 << 20,
    });
    const reader = new LayerReader(blob, remote, cache, digest);
    const before = blobRequests(proxy, digest).length;
    const connections = proxy.connections;
    const got = await Promise.all(
      files.map((f) => reader.read(f.name, f.data.length, 0, f.data.length)),
    );
    got.forEach((g, i) => assert.ok(Buffer.from(g).equals(files[i].data), files[i].name));
    const sent = blobRequests(proxy, digest).slice(before);
    assert.equal(sent.length, 1, "one request");
    assert.match(String(sent[0].headers.range), /^bytes=\d+-\d+(,\d+-\d+){2}$/);
    assert.equal(proxy.connections, connections, "the read reuses the mount's connection");
  });

  it("mounts and reads correctly with a profile naming files the layer does not hold", async () => {
    const digest = image.layers[1].digest;
    const root = path.join(tmp, "foreign");
    fs.mkdirSync(root, { recursive: true });
    const store = ProfileStore.open(root, 10);
    store.save(digest, ["no/such/file", "file0", "", "../../etc/passwd"]);
    store.close();
    const lfs = await layerFs("foreign", config(mountOnly));
    const mp = mountpoint("foreign");
    await lfs.mount(mp, labelsFor(1, { [STARGZ_LAYERS_LABEL]: digest }));
    const deadline = Date.now() + 10_000;
    while (!lfs.mounted()[0].startup.profile?.done && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(lfs.mounted()[0].startup.profile, {
      files: 4,
      found: 0,
      bytes: 0,
      done: true,
    });
    assert.equal(await ok(["cat", path.join(mp, "file1")]), "layer 1\n".repeat(1000));
    assert.equal(lfs.mounted()[0].state.error, undefined);
    await lfs.close();
  });
});
