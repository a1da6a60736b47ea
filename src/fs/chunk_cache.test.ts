import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ChunkCache, chunkKey, MemoryLru } from "./_chunk_cache.ts";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-cache-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function chunk(seed: number, size: number): { key: string; data: Uint8Array } {
  const data = new Uint8Array(size).fill(seed & 0xff);
  data[0] = seed >> 8;
  return { key: createHash("sha256").update(data).digest("hex"), data };
}

describe("MemoryLru", () => {
  it("evicts the least recently used entries beyond its byte bound", () => {
    const lru = new MemoryLru(400);
    lru.set("a", new Uint8Array(100));
    lru.set("b", new Uint8Array(100));
    lru.set("c", new Uint8Array(100));
    lru.get("a");
    lru.set("d", new Uint8Array(100));
    lru.set("e", new Uint8Array(100));
    assert.ok(lru.get("a"), "recently used survives");
    assert.equal(lru.get("b"), undefined, "least recently used is gone");
    assert.ok(lru.bytes <= 400);
    lru.set("huge", new Uint8Array(101));
    assert.equal(lru.get("huge"), undefined, "chunks over a quarter of the bound are not held");
  });
});

describe("ChunkCache", () => {
  it("round-trips chunks through memory and disk and survives a reopen", async () => {
    const dir = path.join(tmp, "a");
    const c = await ChunkCache.open(dir, { maxDiskBytes: 0, maxMemoryBytes: 1 << 20 });
    const x = chunk(1, 5000);
    assert.equal(await c.get(x.key), undefined);
    await c.put(x.key, x.data);
    assert.deepEqual(await c.get(x.key), x.data);
    assert.equal(c.stats().memoryHits, 1);
    const reopened = await ChunkCache.open(dir, { maxDiskBytes: 0, maxMemoryBytes: 1 << 20 });
    assert.ok(reopened.has(x.key));
    assert.deepEqual(await reopened.get(x.key), x.data);
    assert.equal(reopened.stats().diskHits, 1);
    assert.equal(reopened.stats().diskBytes, 5000);
  });

  it("serves a chunk while its disk write is under way, even one too big for memory", async () => {
    const c = await ChunkCache.open(path.join(tmp, "behind"), {
      maxDiskBytes: 0,
      maxMemoryBytes: 0,
    });
    const x = chunk(7, 5000);
    const written = c.put(x.key, x.data);
    assert.ok(c.has(x.key));
    assert.deepEqual(await c.get(x.key), x.data);
    await written;
    assert.equal(c.stats().diskBytes, 5000);
    assert.deepEqual(await c.get(x.key), x.data);
  });

  it("keeps disk usage under the bound by evicting least recently used chunks", async () => {
    const dir = path.join(tmp, "b");
    const c = await ChunkCache.open(dir, { maxDiskBytes: 10_000, maxMemoryBytes: 0 });
    const chunks = Array.from({ length: 6 }, (_, i) => chunk(i + 10, 3000));
    for (const x of chunks.slice(0, 3)) await c.put(x.key, x.data);
    await c.get(chunks[0].key); // chunks[1] becomes the oldest
    await c.put(chunks[3].key, chunks[3].data);
    assert.equal(c.has(chunks[1].key), false);
    assert.equal(c.has(chunks[0].key), true);
    for (const x of chunks.slice(4)) await c.put(x.key, x.data);
    const st = c.stats();
    assert.ok(st.diskBytes <= 10_000, `disk ${st.diskBytes}`);
    assert.equal(st.evictions, 3);
    let onDisk = 0;
    for (const shard of fs.readdirSync(dir)) {
      for (const f of fs.readdirSync(path.join(dir, shard))) {
        onDisk += fs.statSync(path.join(dir, shard, f)).size;
      }
    }
    assert.equal(onDisk, st.diskBytes, "the files on disk match the accounting");
    assert.deepEqual(await c.get(chunks[5].key), chunks[5].data);
  });

  it("applies a smaller bound to chunks left by an earlier run and drops temp files", async () => {
    const dir = path.join(tmp, "c");
    const big = await ChunkCache.open(dir, { maxDiskBytes: 0, maxMemoryBytes: 0 });
    for (let i = 0; i < 5; i++) {
      const x = chunk(i + 40, 2000);
      await big.put(x.key, x.data);
    }
    const shard = fs.readdirSync(dir)[0];
    fs.writeFileSync(path.join(dir, shard, "deadbeef.123.tmp"), "partial");
    const small = await ChunkCache.open(dir, { maxDiskBytes: 4500, maxMemoryBytes: 0 });
    assert.equal(small.stats().diskChunks, 2);
    assert.equal(fs.existsSync(path.join(dir, shard, "deadbeef.123.tmp")), false);
  });

  it("treats a chunk removed behind its back as a miss", async () => {
    const dir = path.join(tmp, "d");
    const c = await ChunkCache.open(dir, { maxDiskBytes: 0, maxMemoryBytes: 0 });
    const x = chunk(77, 1000);
    await c.put(x.key, x.data);
    fs.rmSync(path.join(dir, x.key.slice(0, 2), x.key));
    assert.equal(await c.get(x.key), undefined);
    assert.equal(c.has(x.key), false);
  });

  it("serves from memory when the disk is full and stops growing at what fits", async () => {
    const dir = path.join(tmp, "full");
    fs.mkdirSync(dir);
    // A 64 KiB tmpfs: the disk runs full after a dozen 5000-byte chunks (and their shards).
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]);
    try {
      const c = await ChunkCache.open(dir, { maxDiskBytes: 0, maxMemoryBytes: 1 << 20 });
      const chunks = Array.from({ length: 40 }, (_, i) => chunk(i + 100, 5000));
      for (const x of chunks) await c.put(x.key, x.data);
      const st = c.stats();
      assert.ok(st.diskErrors > 0, "the disk ran full");
      assert.match(String(st.diskError), /ENOSPC|no space/i);
      assert.ok(st.diskBoundBytes > 0 && st.diskBoundBytes < 64 << 10, JSON.stringify(st));
      assert.ok(st.diskBytes <= st.diskBoundBytes);
      for (const x of chunks) assert.deepEqual(await c.get(x.key), x.data, "served from memory");
      // New chunks still reach the disk, in place of the least recently used ones.
      const later = Array.from({ length: 5 }, (_, i) => chunk(i + 200, 5000));
      for (const x of later) await c.put(x.key, x.data);
      assert.ok(c.has(later[4].key));
      assert.ok(c.stats().diskBytes <= st.diskBoundBytes);
      assert.ok(
        fs.readdirSync(dir).every((s) =>
          fs.readdirSync(path.join(dir, s)).every((f) => !f.endsWith(".tmp"))
        ),
      );
    } finally {
      execFileSync("umount", [dir]);
    }
  });

  it("accepts only sha256 digests as keys", () => {
    const hex = "a".repeat(64);
    assert.equal(chunkKey(`sha256:${hex}`), hex);
    assert.throws(() => chunkKey("sha256:../../etc/passwd"), /invalid chunk digest/);
  });
});
