/**
 * The fixed-seed fuzz corpus (targets in test/_fuzz.ts) plus one regression case for each bug
 * the fuzzer or the list of classics found. Seconds per runtime; the long run is
 * `npm run fuzz -- --minutes N`.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import * as zlib from "node:zlib";
import fc from "fast-check";
import {
  ChunkDecodeError,
  convertLayer,
  decodeChunk,
  encodeGzipFooter,
  InvalidEntryError,
  MAX_CHUNK_BYTES,
  MAX_NAME_BYTES,
  MAX_TOC_BYTES,
  MAX_TOC_ENTRIES,
  openBlob,
  OutOfRangeError,
  TarError,
  TOC_TAR_NAME,
  type TocEntry,
  TocError,
} from "../src/estargz/mod.ts";
import { padding, ustarFileHeader } from "../src/estargz/_tar.ts";
import { LayerTree } from "../src/fs/_tree.ts";
import {
  cleanupFuzz,
  memoryReader,
  readAllTar,
  rechecksum,
  RUN_TIMEOUT_MS,
  TARGETS,
} from "./_fuzz.ts";
import { buildTar, sha256, tocOnlyBlob } from "./estargz_fixtures.ts";

/** The CI seed; a failure prints the seed and path that replay it. */
const SEED = 0x5eed;

after(cleanupFuzz);

describe("fuzz corpus (fixed seed)", () => {
  for (const t of TARGETS) {
    it(t.name, async () => {
      await fc.assert(t.property(), {
        seed: SEED,
        numRuns: t.ciRuns,
        endOnFailure: true,
        timeout: RUN_TIMEOUT_MS,
      });
    });
  }
});

const enc = new TextEncoder();
const ZERO16M = zlib.gzipSync(new Uint8Array(16 << 20), { level: 1 });

async function convert(input: Uint8Array): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await convertLayer(input, { write: (c: Uint8Array) => Promise.resolve(parts.push(c)) }, {
    workers: 0,
  });
  return Buffer.concat(parts);
}

/** A TOC gzip stream whose tar holds `json` as stargz.index.json, then `tail` members. */
function tocBlob(json: Uint8Array, tail: Uint8Array[] = []): Uint8Array {
  const tar = Buffer.concat([
    ustarFileHeader(TOC_TAR_NAME, json.length),
    json,
    padding(json.length),
  ]);
  return Buffer.concat([zlib.gzipSync(tar), ...tail, encodeGzipFooter(0)]);
}

function open(b: Uint8Array) {
  return openBlob(memoryReader(b));
}

describe("fuzz regressions and the classics", () => {
  it("a chunk member that inflates to a gigabyte stops at its bound", () => {
    const bomb = Buffer.concat(Array(64).fill(ZERO16M));
    const chunk = {
      path: "f",
      chunkOffset: 0,
      chunkSize: 4096,
      compressedOffset: 0,
      compressedEnd: bomb.length,
      innerOffset: 0,
      chunkDigest: undefined,
    };
    assert.throws(() => decodeChunk("gzip", chunk, bomb), ChunkDecodeError);
  });

  it("a TOC stream that inflates past MAX_TOC_BYTES is a TocError", async () => {
    const json = enc.encode(JSON.stringify({ version: 1, entries: [] }));
    const bomb = Array(Math.ceil(MAX_TOC_BYTES / (16 << 20)) + 1).fill(ZERO16M);
    await assert.rejects(open(tocBlob(json, bomb)), TocError);
    await open(tocBlob(json, [ZERO16M])); // the same TOC under the bound opens
  });

  it("a TOC of more than MAX_TOC_ENTRIES entries is a TocError", async () => {
    const entry = '{"name":"a","type":"dir"},';
    const json = enc.encode(
      `{"version":1,"entries":[${entry.repeat(MAX_TOC_ENTRIES)}{"name":"b","type":"dir"}]}`,
    );
    await assert.rejects(open(tocBlob(json)), /more than 1048576/);
  });

  it("names: NUL, '..', absolute, longer than MAX_NAME_BYTES, nested 100k deep", async () => {
    for (
      const name of [
        "a\0b",
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "x".repeat(MAX_NAME_BYTES + 1),
        "a/".repeat(100_000) + "f",
      ]
    ) {
      const b = tocOnlyBlob([{ name, type: "dir" }], 0);
      await assert.rejects(open(b), InvalidEntryError, name.slice(0, 40));
    }
    // The deepest tree the name bound allows opens (and builds its inode tree).
    const deep = await open(tocOnlyBlob([{ name: "a/".repeat(2047) + "f", type: "reg" }], 0));
    new LayerTree(deep);
  });

  it("hardlinks: to a later entry resolve; missing targets, loops and directories do not", async () => {
    const later = await open(tocOnlyBlob([
      { name: "l", type: "hardlink", linkName: "f" },
      { name: "f", type: "reg", size: 0 },
    ], 0));
    assert.equal(later.entry("l"), later.entry("f"));
    const refused: TocEntry[][] = [
      [{ name: "l", type: "hardlink", linkName: "missing" }],
      [{ name: "a", type: "hardlink", linkName: "b" }, {
        name: "b",
        type: "hardlink",
        linkName: "a",
      }],
      [{ name: "a", type: "hardlink", linkName: "a" }],
      [{ name: "d", type: "dir" }, { name: "l", type: "hardlink", linkName: "d" }],
    ];
    for (const es of refused) await assert.rejects(open(tocOnlyBlob(es, 0)), InvalidEntryError);
  });

  it("duplicates: the later entry wins; a file where a directory is needed is refused", async () => {
    const dup = await open(tocOnlyBlob([
      { name: "a", type: "dir" },
      { name: "a", type: "symlink", linkName: "x" },
    ], 0));
    assert.equal(dup.entry("a")?.type, "symlink");
    await assert.rejects(
      open(tocOnlyBlob([{ name: "a", type: "reg", size: 0 }, { name: "a/b", type: "dir" }], 0)),
      InvalidEntryError,
    );
  });

  it("chunks: past the data region, overlapping, or larger than MAX_CHUNK_BYTES", async () => {
    const d = sha256(new Uint8Array(0));
    await assert.rejects(
      open(tocOnlyBlob([{ name: "f", type: "reg", size: 10, offset: 100, chunkDigest: d }], 100)),
      OutOfRangeError,
    );
    await assert.rejects(
      open(tocOnlyBlob([
        { name: "f", type: "reg", size: 10, offset: 0, chunkSize: 6 },
        { name: "f", type: "chunk", offset: 10, chunkOffset: 4, chunkSize: 6 },
      ], 100)),
      InvalidEntryError,
    );
    await assert.rejects(
      open(tocOnlyBlob([{ name: "f", type: "reg", size: MAX_CHUNK_BYTES + 1, offset: 0 }], 100)),
      /exceeds/,
    );
  });

  it("tar: an extension header claiming gigabytes is a TarError, not an allocation", async () => {
    const h = ustarFileHeader("PaxHeaders/x", 0);
    h[156] = 0x78; // 'x'
    h.set(enc.encode("77777777777\0"), 124);
    rechecksum(h);
    await assert.rejects(readAllTar(Buffer.concat([h, new Uint8Array(1024)])), TarError);
  });

  it("tar: a base-256 mtime beyond 2^53, or a PAX mtime no Date holds (fuzz: convert)", async () => {
    const h = ustarFileHeader("f", 0);
    h.set(new Uint8Array(12).fill(0xff), 136);
    rechecksum(h);
    await assert.rejects(convert(Buffer.concat([h, new Uint8Array(1024)])), TarError);
    const pax = buildTar([{ name: "f", type: "reg", mtimeMs: 9e15 + 1 }]);
    await convert(pax);
  });

  it("converter: truncated zstd and corrupt gzip input are TarErrors", async () => {
    const tar = buildTar([{ name: "f", type: "reg", data: new Uint8Array(5000).fill(7) }]);
    const z = zlib.zstdCompressSync(tar);
    await assert.rejects(convert(z.subarray(0, z.length - 9)), TarError);
    const g = zlib.gzipSync(tar);
    g[20] ^= 0xff;
    await assert.rejects(convert(g), TarError);
  });

  it("converter: refuses a layer its own reader would refuse", async () => {
    const tar = buildTar([{ name: "l", type: "hardlink", linkName: "nowhere" }]);
    await assert.rejects(convert(tar), InvalidEntryError);
    const fileAsDir = buildTar([
      { name: "a", type: "reg", data: new Uint8Array(1) },
      { name: "a/b", type: "reg", data: new Uint8Array(1) },
    ]);
    await assert.rejects(convert(fileAsDir), InvalidEntryError);
  });
});
