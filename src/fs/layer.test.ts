import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { convertLayer, fileBlobReader, type TocEntry } from "../estargz/mod.ts";
import { tocOnlyBlob } from "../../test/estargz_fixtures.ts";
import { Logger } from "../log/mod.ts";
import { parseDigest } from "../registry/mod.ts";
import { BackgroundScheduler } from "./_background.ts";
import { ChunkCache } from "./_chunk_cache.ts";
import type { RangeSource } from "./_layer_reader.ts";
import { rangeSourceOf } from "./_local_source.ts";
import type { Range } from "./_regions.ts";
import { Layer } from "./layer.ts";

let tmp: string;
const closers: (() => Promise<void>)[] = [];
const DIGEST = parseDigest("sha256:" + "1".repeat(64));

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-layer-"));
  const root = path.join(tmp, "root");
  fs.mkdirSync(path.join(root, "bin"), { recursive: true });
  for (let i = 0; i < 30; i++) {
    fs.writeFileSync(path.join(root, "bin", `f${i}`), Buffer.alloc(20_000 + i, i));
  }
  fs.writeFileSync(path.join(root, "first"), "prioritized");
  execFileSync("tar", ["-C", root, "-cf", path.join(tmp, "layer.tar"), "."]);
});
after(async () => {
  for (const c of closers) await c();
  fs.rmSync(tmp, { recursive: true, force: true });
});

class Counting implements RangeSource {
  requests = 0;
  /** The next this many requests fail (a registry outage). */
  failNext = 0;
  constructor(readonly inner: RangeSource) {}
  get size(): number {
    return this.inner.size;
  }
  readRanges(r: readonly Range[]): Promise<Uint8Array[]> {
    this.requests++;
    if (this.failNext > 0) {
      this.failNext--;
      return Promise.reject(new Error("registry unreachable"));
    }
    return this.inner.readRanges(r);
  }
}

async function openLayer(
  name: string,
  convertOpts: Parameters<typeof convertLayer>[2] = {},
  expectedTocDigest?: string,
) {
  const blobPath = path.join(tmp, `${name}.esgz`);
  const res = await convertLayer(path.join(tmp, "layer.tar"), blobPath, {
    workers: 0,
    chunkSize: 8192,
    ...convertOpts,
  });
  const br = await fileBlobReader(blobPath);
  closers.push(() => br.close());
  const counting = new Counting(rangeSourceOf(br));
  const source = Object.assign(counting, { read: (o: number, l: number) => br.read(o, l) });
  const cache = await ChunkCache.open(path.join(tmp, `cache-${name}`), {
    maxDiskBytes: 0,
    maxMemoryBytes: 1 << 20,
  });
  const layer = await Layer.open({
    digest: DIGEST,
    source,
    expectedTocDigest: expectedTocDigest ?? res.tocDigest,
    cache,
    scheduler: new BackgroundScheduler(2, 0),
    log: new Logger(),
    backgroundRetryMs: 10,
  });
  closers.push(() => Promise.resolve(layer.close()));
  return { layer, counting, res };
}

describe("Layer", () => {
  it("refuses a TOC that does not match the expected digest", async () => {
    await assert.rejects(openLayer("wrong", {}, "sha256:" + "f".repeat(64)), /digest/i);
  });

  it("reports state as the Go snapshotter does and reaches 100% after background fetch", async () => {
    const { layer, counting } = await openLayer("bg");
    const s0 = layer.state();
    assert.deepEqual(Object.keys(s0), ["digest", "size", "fetchedSize", "fetchedPercent"]);
    assert.equal(s0.digest, DIGEST);
    assert.ok(s0.fetchedSize > 0 && s0.fetchedSize < s0.size);
    assert.equal(layer.prefetchSize(0), 0, "no landmark, no prefetch size: nothing to prefetch");
    await layer.startBackgroundFetch();
    const s1 = layer.state();
    assert.equal(s1.fetchedSize, s1.size);
    assert.equal(s1.fetchedPercent, 100);
    assert.ok(layer.complete);
    const requests = counting.requests;
    const f = layer.tree.lookupPath("bin/f7")!;
    const data = await layer.read(f.path, f.size, 0, f.size);
    assert.ok(Buffer.from(data).equals(Buffer.alloc(20_007, 7)));
    assert.equal(counting.requests, requests, "a fully fetched layer makes no more requests");
    const text = new TextDecoder().decode(layer.stateBytes());
    assert.match(
      text,
      /^\{"digest":"sha256:1+","size":\d+,"fetchedSize":\d+,"fetchedPercent":100\}\n$/,
    );
  });

  it("resumes background fetch after failed steps instead of giving up", async () => {
    const { layer, counting } = await openLayer("bg-outage");
    counting.failNext = 3;
    await layer.startBackgroundFetch();
    assert.equal(counting.failNext, 0);
    assert.ok(layer.complete, "the whole blob was fetched after the outage");
    assert.equal(layer.state().error, undefined, "no read failed");
  });

  it("prefetches up to the prefetch landmark and records read errors in the state", async () => {
    const { layer } = await openLayer("landmark", { prioritizedFiles: ["first", "bin/f0"] });
    const size = layer.prefetchSize(1 << 30);
    assert.ok(size > 0 && size < layer.reader.dataSize, `prefetch ${size}`);
    await layer.startPrefetch(size);
    assert.equal(await layer.waitPrefetch(1000), true);
    const first = layer.tree.lookupPath("first")!;
    assert.ok(layer.reader.cache.has(layer.reader.keyOf(layer.blob.chunks(first.path)[0])));
    await assert.rejects(layer.read("no/such/file", 10, 0, 10));
    assert.ok(layer.state().error, "the error shows in the state file");
    assert.equal(Object.keys(layer.state())[0], "error");
  });

  it("does not prefetch a layer marked with the no-prefetch landmark", async () => {
    const { layer } = await openLayer("noprefetch");
    assert.equal(
      layer.prefetchSize(1 << 30),
      (await layer.blob.readToc()).entries.some((e) => e.name.endsWith(".no.prefetch.landmark"))
        ? 0
        : layer.reader.dataSize,
    );
  });
});

describe("Layer.open of a large layer", () => {
  it("keeps a mounted layer answering reads within 50 ms while a 100k-entry layer opens", async () => {
    const { layer } = await openLayer("served");
    const f = layer.tree.lookupPath("bin/f3")!;
    await layer.read(f.path, f.size, 0, f.size); // cached from here on
    const entries: TocEntry[] = [];
    let offset = 0;
    for (let d = 0; d < 1000; d++) {
      entries.push({ name: `d${d}/`, type: "dir", mode: 0o755 });
      for (let i = 0; i < 99; i++) {
        entries.push({
          name: `d${d}/file${i}.txt`,
          type: "reg",
          size: 100,
          offset: offset += 64,
          modtime: "2021-03-04T05:06:07Z",
          chunkDigest: "sha256:" + (d * 100 + i).toString(16).padStart(64, "0"),
        });
      }
    }
    const big = tocOnlyBlob(entries, offset + 4096);
    entries.length = 0;
    const bigSource = Object.assign(
      rangeSourceOf({ size: big.length, read: (o, l) => Promise.resolve(big.slice(o, o + l)) }),
      { read: (o: number, l: number) => Promise.resolve(big.slice(o, o + l)) },
    );
    let opened = false;
    const opening = Layer.open({
      digest: parseDigest("sha256:" + "2".repeat(64)),
      source: bigSource,
      cache: await ChunkCache.open(path.join(tmp, "cache-big"), {
        maxDiskBytes: 0,
        maxMemoryBytes: 1 << 20,
      }),
      scheduler: new BackgroundScheduler(2, 0),
      log: new Logger(),
    }).finally(() => (opened = true));
    const slow: number[] = [];
    let reads = 0;
    while (!opened) {
      const t0 = performance.now();
      await layer.read(f.path, f.size, 100, 4096);
      const ms = performance.now() - t0;
      if (ms > 50) slow.push(Math.round(ms));
      reads++;
      // Like a FUSE request arriving from the device: a macrotask, not a microtask.
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const bigLayer = await opening;
    closers.push(() => Promise.resolve(bigLayer.close()));
    assert.equal(bigLayer.tree.size, 1 + 1000 * 100);
    assert.ok(reads > 5, `${reads} reads while the layer opened`);
    assert.deepEqual(slow, [], `reads slower than 50 ms among ${reads}`);
  });
});
