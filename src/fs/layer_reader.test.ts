import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { setImmediate } from "node:timers";
import { convertLayer, fileBlobReader, openBlob } from "../estargz/mod.ts";
import type { EstargzBlob } from "../estargz/mod.ts";
import { ChunkCache } from "./_chunk_cache.ts";
import { LayerReader } from "./_layer_reader.ts";
import type { RangeSource } from "./_layer_reader.ts";
import { rangeSourceOf } from "./_local_source.ts";
import type { Range } from "./_regions.ts";

let tmp: string;
const handles: { close(): Promise<void> }[] = [];
const files = new Map<string, Uint8Array>();

function pseudoRandom(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A blob file converted from a real tar of a real directory, plus a counting source. */
async function makeBlob(name: string, minChunkSize = 0): Promise<string> {
  const blob = path.join(tmp, `${name}.esgz`);
  await convertLayer(path.join(tmp, "layer.tar"), blob, {
    chunkSize: 65536,
    minChunkSize,
    workers: 0,
  });
  return blob;
}

class CountingSource implements RangeSource {
  calls: Range[][] = [];
  constructor(readonly inner: RangeSource) {}
  get size(): number {
    return this.inner.size;
  }
  readRanges(ranges: readonly Range[]): Promise<Uint8Array[]> {
    this.calls.push([...ranges]);
    return this.inner.readRanges(ranges);
  }
}

async function open(
  blobPath: string,
  cacheName: string,
  minFetchBytes = 0,
): Promise<{ reader: LayerReader; source: CountingSource; blob: EstargzBlob }> {
  const br = await fileBlobReader(blobPath);
  handles.push(br);
  const blob = await openBlob(br);
  const source = new CountingSource(rangeSourceOf(br));
  const cache = await ChunkCache.open(path.join(tmp, cacheName), {
    maxDiskBytes: 0,
    maxMemoryBytes: 8 << 20,
  });
  return {
    reader: new LayerReader(blob, source, cache, "sha256:" + "0".repeat(64), minFetchBytes),
    source,
    blob,
  };
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-reader-"));
  const root = path.join(tmp, "root");
  fs.mkdirSync(path.join(root, "d"), { recursive: true });
  files.set("big", pseudoRandom(300_000, 1));
  files.set("d/small", new TextEncoder().encode("hello\n"));
  files.set("empty", new Uint8Array(0));
  files.set("exact", pseudoRandom(65536, 2));
  files.set("huge", pseudoRandom(2 << 20, 3));
  for (let i = 0; i < 20; i++) files.set(`d/f${i}`, pseudoRandom(100 + i * 37, 10 + i));
  for (const [p, data] of files) fs.writeFileSync(path.join(root, p), data);
  execFileSync("tar", ["--sort=name", "-C", root, "-cf", path.join(tmp, "layer.tar"), "."]);
});
after(async () => {
  for (const h of handles) await h.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Byte equality regardless of Buffer/Uint8Array class. */
function same(actual: Uint8Array, expected: Uint8Array, msg = "bytes differ"): void {
  assert.equal(actual.length, expected.length, msg);
  assert.ok(Buffer.compare(actual, expected) === 0, msg);
}

describe("LayerReader", () => {
  it("serves every byte range of every file exactly", async () => {
    for (const [minChunk, name] of [[0, "plain"], [4096, "packed"]] as const) {
      const { reader } = await open(await makeBlob(name, minChunk), `cache-${name}`);
      for (const [p, data] of files) {
        const whole = await reader.read(p, data.length, 0, data.length + 100);
        same(whole, data, `${name}: ${p}`);
        for (
          const [off, len] of [[1, 7], [65535, 2], [65536, 65536], [
            Math.max(0, data.length - 3),
            10,
          ], [
            data.length + 5,
            10,
          ]]
        ) {
          const got = await reader.read(p, data.length, off, len);
          same(
            got,
            data.subarray(Math.min(off, data.length), Math.min(off + len, data.length)),
            `${name}: ${p} @${off}+${len}`,
          );
        }
      }
    }
  });

  it("fetches a read's missing chunks in one request and serves repeats from the cache", async () => {
    const { reader, source } = await open(await makeBlob("batch"), "cache-batch");
    const big = files.get("big")!;
    await reader.read("big", big.length, 0, big.length);
    assert.equal(source.calls.length, 1, "one request for all five chunks");
    assert.equal(source.calls[0].length, 5, "a range per extent (the source merges them)");
    await reader.read("big", big.length, 1000, 200_000);
    assert.equal(source.calls.length, 1, "cached");
  });

  it("fetches the small files that follow a miss in the same request (minFetchBytes)", async () => {
    const { reader, source } = await open(await makeBlob("ahead"), "cache-ahead", 1 << 20);
    const sizes = [...files].filter(([p]) => p.startsWith("d/f"));
    await reader.read(sizes[0][0], sizes[0][1].length, 0, 10);
    assert.equal(source.calls.length, 1);
    // Let the neighbours' decoding into the cache finish.
    await new Promise((r) => setTimeout(r, 100));
    for (const [p, data] of sizes) same(await reader.read(p, data.length, 0, data.length), data, p);
    assert.equal(source.calls.length, 1, "the neighbours came with the first request");
    const { reader: plain, source: plainSource } = await open(
      await makeBlob("no-ahead"),
      "cache-no-ahead",
    );
    for (const [p, data] of sizes.slice(0, 3)) await plain.read(p, data.length, 0, 10);
    assert.equal(plainSource.calls.length, 3, "without it, each file is its own request");
  });

  it("sends the misses of concurrent reads of different files in one request", async () => {
    const { reader, source } = await open(await makeBlob("coalesce"), "cache-coalesce");
    const reads = ["big", "exact", "d/f7"].map((p) => {
      const data = files.get(p)!;
      return reader.read(p, data.length, 0, data.length).then((got) => same(got, data, p));
    });
    await Promise.all(reads);
    assert.equal(source.calls.length, 1, "one request");
    assert.ok(source.calls[0].length >= 3, "holding the extents of all three files");
  });

  it("gives a sequential reader of a big file fewer, growing requests", async () => {
    const { reader, source } = await open(await makeBlob("sequential"), "cache-seq", 65536);
    const huge = files.get("huge")!;
    for (let off = 0; off < huge.length; off += 131072) {
      same(
        await reader.read("huge", huge.length, off, 131072),
        huge.subarray(off, off + 131072),
        `@${off}`,
      );
    }
    const sizes = source.calls.map((ranges) => ranges.reduce((n, [s, e]) => n + e - s, 0));
    // A fixed 64 KiB window would take 16 requests of 128 KiB; doubling windows take about 6.
    assert.ok(sizes.length <= 8, `${sizes.length} requests: ${sizes}`);
    assert.ok(Math.max(...sizes) >= 4 * sizes[0], `windows grow: ${sizes}`);
  });

  it("sends nothing for a read interrupted before its batch leaves", async () => {
    const { reader, source } = await open(await makeBlob("interrupt"), "cache-interrupt");
    const big = files.get("big")!;
    const exact = files.get("exact")!;
    const ac = new AbortController();
    const cancelled = reader.read("big", big.length, 0, big.length, ac.signal);
    const other = reader.read("exact", exact.length, 0, exact.length);
    // Runs after both reads queued their misses and before the batch is sent (FIFO immediates).
    setImmediate(() => ac.abort());
    await assert.rejects(cancelled, { name: "AbortError" });
    same(await other, exact, "the other read is served");
    assert.equal(source.calls.length, 1);
    const bigChunks = new Set(
      (await open(await makeBlob("interrupt"), "cache-probe-i")).blob.chunks("big").map((c) =>
        c.compressedOffset
      ),
    );
    assert.ok(source.calls[0].every(([s]) => !bigChunks.has(s)), "none of the cancelled ranges");
    const before = new AbortController();
    before.abort();
    await assert.rejects(
      reader.read("big", big.length, 0, 10, before.signal),
      { name: "AbortError" },
    );
    assert.equal(source.calls.length, 1, "an already interrupted read sends nothing");
  });

  it("shares one fetch among concurrent readers of the same chunk", async () => {
    const { reader, source } = await open(await makeBlob("concurrent"), "cache-concurrent");
    const big = files.get("big")!;
    const reads = await Promise.all(
      Array.from({ length: 8 }, () => reader.read("big", big.length, 70_000, 1000)),
    );
    for (const r of reads) same(r, big.subarray(70_000, 71_000));
    assert.equal(source.calls.length, 1);
  });

  it("decodes a member once for all concurrent readers of the files packed into it", async () => {
    const { reader, source, blob } = await open(await makeBlob("member", 4096), "cache-member");
    const packed = [...files].filter(([p]) => p.startsWith("d/f"));
    const member = blob.chunks(packed[0][0])[0].compressedOffset;
    const together = packed.filter(([p]) => blob.chunks(p)[0].compressedOffset === member);
    assert.ok(together.length > 3, `${together.length} files share the first member`);
    let decodes = 0;
    const decode = blob.decodeMemberAsync.bind(blob);
    blob.decodeMemberAsync = (chunks, bytes) => {
      decodes++;
      return decode(chunks, bytes);
    };
    const reads = await Promise.all(
      together.flatMap(([p, data]) =>
        [0, 1].map(() => reader.read(p, data.length, 0, data.length))
      ),
    );
    reads.forEach((r, i) => same(r, together[i >> 1][1], together[i >> 1][0]));
    assert.equal(source.calls.length, 1, "one request");
    assert.equal(decodes, 1, "one decode");
  });

  it("never serves bytes of a corrupted chunk", async () => {
    const blobPath = await makeBlob("corrupt");
    const { blob } = await open(blobPath, "cache-probe");
    const c = blob.chunkAt("big", 131072)!;
    // And a small file's member, which is decoded on the event loop rather than the pool.
    const small = blob.chunkAt("d/f3", 0)!;
    const bytes = fs.readFileSync(blobPath);
    // Flip a byte in the middle of the compressed payload of those chunks.
    bytes[Math.floor((c.compressedOffset + c.compressedEnd) / 2)] ^= 0xff;
    bytes[small.compressedEnd - 12] ^= 0xff;
    fs.writeFileSync(blobPath, bytes);
    const { reader } = await open(blobPath, "cache-corrupt");
    const big = files.get("big")!;
    await assert.rejects(
      reader.read("big", big.length, 131072, 10),
      (err: Error) => /big/.test(err.message),
    );
    await assert.rejects(
      reader.read("d/f3", files.get("d/f3")!.length, 0, 10),
      (err: Error) => /d\/f3/.test(err.message),
    );
    same(
      await reader.read("big", big.length, 0, 10),
      big.subarray(0, 10),
      "other chunks still serve",
    );
  });

  it("fetches whole blob ranges for prefetch and tracks fetched bytes", async () => {
    const { reader, source } = await open(await makeBlob("prefetch"), "cache-prefetch");
    const before = reader.fetched.totalSize;
    assert.ok(before > 0, "footer and TOC count as fetched");
    const n = await reader.fetchBlobRange(0, reader.dataSize);
    assert.ok(n > 0);
    const calls = source.calls.length;
    for (const [p, data] of files) {
      same(await reader.read(p, data.length, 0, data.length), data);
    }
    assert.equal(source.calls.length, calls, "no fetch after the whole data region was fetched");
    assert.ok(
      reader.unfetched().reduce((a, [s, e]) => a + e - s, 0) < 4096,
      "only headers before the first payload may remain",
    );
    const digest = createHash("sha256").update(
      await reader.read("d/f3", files.get("d/f3")!.length, 0, 1 << 20),
    ).digest("hex");
    assert.equal(digest, createHash("sha256").update(files.get("d/f3")!).digest("hex"));
  });
});
