/**
 * Property-based fuzzing of the formats the daemon reads from registries (fast-check): tar
 * headers (ustar, GNU long names, PAX), footers, TOC JSON, gzip members and zstd frames, TOC
 * chunk tables, whole blobs, the converter and the layer tree. Each target states what must
 * hold for any input: only our typed errors (`EstargzError`) escape, nothing unverified is
 * served, and the call returns.
 *
 * The targets are shared by the fixed-seed corpus in CI (test/fuzz.test.ts, a few hundred runs
 * in seconds) and the long runner (`npm run fuzz -- --minutes N`, bench/fuzz.ts).
 */
import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import fc from "fast-check";
import {
  convertLayer,
  decodeChunk,
  decodeToc,
  type EstargzBlob,
  EstargzError,
  NO_PREFETCH_LANDMARK,
  openBlob,
  parseFooter,
  PREFETCH_LANDMARK,
  type TocEntry,
} from "../src/estargz/mod.ts";
import type { Chunk } from "../src/estargz/mod.ts";
import {
  encodeGzipFooter,
  encodeLegacyFooter,
  encodeZstdFooterFrame,
} from "../src/estargz/footer.ts";
import { BLOCK, ByteSource, TarReader, ustarFileHeader } from "../src/estargz/_tar.ts";
import { zstdFrames } from "../src/estargz/_zstd.ts";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { ChunkCache } from "../src/fs/_chunk_cache.ts";
import { LayerReader } from "../src/fs/_layer_reader.ts";
import { rangeSourceOf } from "../src/fs/_local_source.ts";
import { LayerTree } from "../src/fs/_tree.ts";
import { buildTar, sha256, type TarSpec, tocOnlyBlob } from "./estargz_fixtures.ts";

/** One fuzz target: a property and how many runs the CI corpus gives it. */
export interface FuzzTarget {
  name: string;
  property(): fc.IAsyncPropertyWithHooks<never> | fc.IAsyncProperty<unknown[]>;
  ciRuns: number;
}

/**
 * Longest one run may take before it counts as a hang (fast-check fails the property). Runs
 * take milliseconds; the margin is for a loaded CI machine.
 */
export const RUN_TIMEOUT_MS = 30_000;

/** Runs `f`; an error other than our typed ones fails the property. */
export async function onlyTyped<T>(f: () => Promise<T> | T): Promise<T | undefined> {
  try {
    return await f();
  } catch (err) {
    if (err instanceof EstargzError) return undefined;
    throw new Error(`untyped error escaped: ${(err as Error)?.stack ?? err}`);
  }
}

/** A BlobReader over bytes in memory. */
export function memoryReader(
  b: Uint8Array,
): { size: number; read(o: number, l: number): Promise<Uint8Array> } {
  return {
    size: b.length,
    read(o, l) {
      if (o < 0 || l < 0 || o + l > b.length) {
        return Promise.reject(new RangeError(`read ${o}+${l} outside ${b.length}`));
      }
      return Promise.resolve(b.subarray(o, o + l));
    },
  };
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  // Small pieces, so that headers straddle reads as they do on the network.
  for (let i = 0; i < b.length; i += 777) yield b.subarray(i, i + 777);
}

/** Reads every entry (and payload) of a tar stream. */
export async function readAllTar(b: Uint8Array): Promise<string[]> {
  const r = new TarReader(new ByteSource(once(b)));
  const names: string[] = [];
  for (let e = await r.next(); e; e = await r.next()) {
    names.push(e.header.name);
    while (await r.readData(1 << 16));
  }
  return names;
}

/** A GNU long-name (`L`) header and body for `name`, then a ustar header truncating it. */
export function gnuLongName(name: string, data: Uint8Array): Uint8Array {
  const body = new TextEncoder().encode(name + "\0");
  const l = ustarFileHeader("././@LongLink", body.length);
  l[156] = 0x4c; // 'L'
  rechecksum(l);
  // The ustar name is what GNU tar puts there too: a truncation the long name replaces.
  const h = ustarFileHeader(
    Buffer.from(name).subarray(0, 99).toString("latin1").replace(/[^\x20-\x7e]/g, "_"),
    data.length,
  );
  return Buffer.concat([
    l,
    body,
    new Uint8Array((BLOCK - (body.length % BLOCK)) % BLOCK),
    h,
    data,
    new Uint8Array((BLOCK - (data.length % BLOCK)) % BLOCK),
    new Uint8Array(1024),
  ]);
}

/** Rewrites a header's checksum after a field changed, so that mutations reach the parser. */
export function rechecksum(b: Uint8Array): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

/** Byte-level mutations: overwrite, insert, delete, truncate; fields kept checksummed. */
const mutation = fc.oneof(
  fc.record({
    kind: fc.constant("set" as const),
    at: fc.nat(),
    byte: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("del" as const),
    at: fc.nat(),
    n: fc.integer({ min: 1, max: 600 }),
  }),
  fc.record({
    kind: fc.constant("ins" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
  fc.record({
    kind: fc.constant("num" as const),
    block: fc.nat(),
    field: fc.constantFrom(100, 108, 116, 124, 136, 329, 337),
    value: fc.oneof(
      fc.constantFrom(
        "77777777777\0",
        "-1",
        "\x80\0\0\0\0\0\0\0\0\0\0\x01",
        "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        "9",
        " 1 2",
      ),
      fc.string({ maxLength: 12 }),
    ),
  }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

/** Applies mutations to a copy of `b`. */
export function mutate(b: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  let out = new Uint8Array(b);
  for (const m of ms) {
    if (out.length === 0) break;
    switch (m.kind) {
      case "set":
        out[m.at % out.length] = m.byte;
        break;
      case "cut":
        out = out.slice(0, m.at % out.length);
        break;
      case "del": {
        const at = m.at % out.length;
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + m.n)]);
        break;
      }
      case "ins": {
        const at = m.at % out.length;
        out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
        break;
      }
      case "num": {
        const blocks = Math.floor(out.length / BLOCK);
        if (blocks === 0) break;
        const h = out.subarray((m.block % blocks) * BLOCK, (m.block % blocks + 1) * BLOCK);
        const len = m.field === 124 || m.field === 136 ? 12 : 8;
        h.fill(0, m.field, m.field + len);
        h.set(Buffer.from(m.value, "latin1").subarray(0, len), m.field);
        rechecksum(h);
        break;
      }
    }
  }
  return out;
}

/** Names as hostile as tar and TOC names get. */
export const hostileName = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z]{1,8}(\/[a-z]{1,8}){0,3}\/?$/) },
  fc.constantFrom(
    "..",
    "../etc/passwd",
    "a/../../b",
    "/abs",
    "/",
    "./",
    "",
    "a\0b",
    "a//b",
    "./a/./b/",
    ".wh..wh..opq",
    ".wh.a",
    "stargz.index.json",
    "a/".repeat(2100),
    "x".repeat(4097),
    "é".repeat(1400),
  ),
  fc.string({ unit: "binary", maxLength: 40 }),
);

const tarSpec: fc.Arbitrary<TarSpec> = fc.record({
  name: hostileName,
  type: fc.constantFrom("reg", "dir", "symlink", "hardlink", "char", "block", "fifo"),
  data: fc.uint8Array({ maxLength: 2000 }),
  linkName: hostileName,
  uid: fc.oneof(fc.nat(0o7777777), fc.constant(2 ** 40)),
  gid: fc.nat(0o7777777),
  mtimeMs: fc.oneof(fc.constant(1_700_000_000_000), fc.constant(1_700_000_000_123)),
  xattrs: fc.option(
    fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.uint8Array({ maxLength: 16 })),
    {
      nil: undefined,
    },
  ),
}, { requiredKeys: ["name", "type"] }).map((s) => s as TarSpec);

/** TOC entries built to hit every rule of the index: names, links, chunks, offsets. */
function tocEntries(dataSize: number): fc.Arbitrary<TocEntry[]> {
  const names = ["a", "a/b", "a/b/c", "d", "e", "f/g"];
  const name = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...names) }, hostileName);
  const digest = fc.oneof(
    fc.constant(""),
    fc.constant(sha256(new Uint8Array(0))),
    fc.constant(undefined),
  );
  const offset = fc.oneof(fc.nat(dataSize + 10), fc.constant(2 ** 52));
  const entry: fc.Arbitrary<TocEntry> = fc.oneof(
    fc.record({ name, type: fc.constant("dir" as const), mode: fc.nat(0o7777) }),
    fc.record({
      name,
      type: fc.constant("reg" as const),
      size: fc.oneof(fc.nat(300), fc.constant(2 ** 40)),
      offset,
      chunkSize: fc.option(fc.nat(300), { nil: undefined }),
      innerOffset: fc.option(fc.nat(300), { nil: undefined }),
      chunkDigest: digest,
    }, { requiredKeys: ["name", "type"] }),
    fc.record({
      name,
      type: fc.constant("chunk" as const),
      offset,
      chunkOffset: fc.nat(400),
      chunkSize: fc.nat(300),
      chunkDigest: digest,
    }, { requiredKeys: ["name", "type"] }),
    fc.record({ name, type: fc.constant("hardlink" as const), linkName: name }),
    fc.record({ name, type: fc.constant("symlink" as const), linkName: hostileName }),
    fc.record({
      name,
      type: fc.constantFrom("char" as const, "block" as const, "fifo" as const),
      devMajor: fc.nat(300),
      devMinor: fc.nat(300),
    }),
  );
  return fc.array(entry, { maxLength: 24 }).map((es) => es.map((e) => clean(e)));
}

/** Drops the keys fast-check left undefined (the JSON would not carry them either). */
function clean(e: TocEntry): TocEntry {
  return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as TocEntry;
}

/** Every regular file's chunks cover it exactly and stay inside the data region. */
function checkIndex(blob: EstargzBlob): void {
  for (const [, n] of blob.nodes()) {
    if (n.type !== "reg") continue;
    let next = 0;
    for (const c of blob.chunks(n)) {
      assert.equal(c.chunkOffset, next);
      assert.ok(c.compressedOffset < c.compressedEnd, "empty extent");
      assert.ok(c.compressedEnd <= blob.tocOffset, "extent past the data region");
      next += c.chunkSize;
    }
    assert.equal(next, n.size);
  }
  new LayerTree(blob);
}

const LANDMARKS = new Set([PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK]);

/** A small real layer, converted once per format: the base the blob mutations start from. */
export interface Sample {
  blob: Uint8Array;
  tocDigest: string;
  files: Map<string, Uint8Array>;
}

const samples = new Map<string, Promise<Sample>>();

/** The sample layer in `format` (cached). */
export function sample(format: "gzip" | "zstd"): Promise<Sample> {
  let s = samples.get(format);
  if (!s) {
    s = (async () => {
      const files = new Map<string, Uint8Array>();
      const specs: TarSpec[] = [{ name: "./", type: "dir" }, { name: "d/", type: "dir" }];
      for (let i = 0; i < 6; i++) {
        const data = new Uint8Array(i * 700 + 1).map((_, j) => (j * (i + 3)) & 0xff);
        files.set(i % 2 ? `d/f${i}` : `f${i}`, data);
        specs.push({ name: i % 2 ? `d/f${i}` : `f${i}`, type: "reg", data });
      }
      specs.push({ name: "d/link", type: "hardlink", linkName: "f0" });
      const parts: Uint8Array[] = [];
      const res = await convertLayer(buildTar(specs), {
        write: (c: Uint8Array) => Promise.resolve(parts.push(new Uint8Array(c))),
      }, { format, chunkSize: 1024, workers: 0 });
      return { blob: Buffer.concat(parts), tocDigest: res.tocDigest, files };
    })();
    samples.set(format, s);
  }
  return s;
}

/** Opens a blob and reads every chunk: each either verifies against the original or throws. */
async function openAndRead(b: Uint8Array, s: Sample, expected: string | undefined): Promise<void> {
  const blob = await onlyTyped(() => openBlob(memoryReader(b), { expectedTocDigest: expected }));
  if (!blob) return;
  checkIndex(blob);
  for (const [path, n] of blob.nodes()) {
    if (n.type !== "reg") continue;
    const original = s.files.get(n.name);
    for (const c of blob.chunks(n)) {
      const data: Uint8Array | undefined = await onlyTyped(async () => {
        try {
          return await blob.readChunk(c);
        } catch (err) {
          // The reader may refuse a range the (mutated) TOC placed outside the blob.
          if (err instanceof RangeError && /outside/.test(err.message)) return undefined;
          throw err;
        }
      });
      if (data === undefined || expected === undefined || LANDMARKS.has(n.name)) continue;
      // With a verified TOC, whatever a read serves is the original content.
      assert.ok(original, `${path}: not in the layer`);
      assert.deepEqual(
        Buffer.from(data),
        Buffer.from(original.subarray(c.chunkOffset, c.chunkOffset + c.chunkSize)),
        `${path} at ${c.chunkOffset}: served bytes that are not the file's`,
      );
    }
  }
}

/** Where the layer-read target's (memory-only) chunk caches live. */
const cacheDir = path.join(os.tmpdir(), `stargz-fuzz-cache-${process.pid}`);

/** Removes what the targets left on disk. */
export async function cleanupFuzz(): Promise<void> {
  await fsp.rm(cacheDir, { recursive: true, force: true });
}

/**
 * Opens a (mutated) blob as the layer filesystem does, with its verified TOC, and reads ranges
 * of every file through the read path (extents, read-ahead, cache): each read either returns
 * the original bytes or throws one of our errors.
 */
async function readLayer(
  b: Uint8Array,
  s: Sample,
  reads: readonly [number, number][],
  minFetchBytes: number,
): Promise<void> {
  const blob = await onlyTyped(() => openBlob(memoryReader(b), { expectedTocDigest: s.tocDigest }));
  if (!blob) return;
  const tree = new LayerTree(blob);
  const cache = await ChunkCache.open(cacheDir, { maxDiskBytes: 0, maxMemoryBytes: 1 << 20 });
  const reader = new LayerReader(
    blob,
    rangeSourceOf(memoryReader(b)),
    cache,
    "sha256:" + "0".repeat(64),
    minFetchBytes,
  );
  for (const [name, original] of s.files) {
    const node = tree.lookupPath(name);
    assert.ok(node, `${name} missing from a tree whose TOC verified`);
    for (const [offset, length] of reads) {
      const got: Uint8Array | undefined = await onlyTyped(
        async (): Promise<Uint8Array | undefined> => {
          try {
            return await reader.read(node.path, node.size, offset, length);
          } catch (err) {
            if (err instanceof RangeError && /outside/.test(err.message)) return undefined;
            throw err;
          }
        },
      );
      if (got === undefined) continue;
      assert.deepEqual(
        Buffer.from(got),
        Buffer.from(original.subarray(offset, offset + length)),
        `${name} ${offset}+${length}: served bytes that are not the file's`,
      );
    }
  }
}

const footerTail = fc.oneof(
  fc.uint8Array({ maxLength: 120 }),
  fc.tuple(fc.nat(2 ** 40), fc.array(mutation, { maxLength: 3 })).map(([off, ms]) =>
    mutate(encodeGzipFooter(off), ms)
  ),
  fc.tuple(fc.nat(2 ** 40), fc.array(mutation, { maxLength: 3 })).map(([off, ms]) =>
    mutate(encodeLegacyFooter(off), ms)
  ),
  fc.tuple(fc.nat(2 ** 40), fc.nat(2 ** 40), fc.nat(2 ** 40), fc.array(mutation, { maxLength: 3 }))
    .map(([off, c, u, ms]) => mutate(encodeZstdFooterFrame(off, c, u), ms)),
);

/** The targets, cheapest first. */
export const TARGETS: FuzzTarget[] = [
  {
    name: "footer",
    ciRuns: 400,
    property: () =>
      fc.asyncProperty(footerTail, fc.nat(2 ** 41), async (tail, size) => {
        const f = await onlyTyped(() => parseFooter(tail, size));
        if (!f) return;
        assert.ok(f.tocOffset >= 0 && f.tocOffset < size, "TOC offset outside the blob");
        assert.ok(f.dataEnd <= f.tocOffset, "data region past the TOC");
      }),
  },
  {
    name: "toc-json",
    ciRuns: 300,
    property: () =>
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().map((j) => JSON.stringify(j)),
          fc.record({
            version: fc.oneof(fc.constant(1), fc.jsonValue()),
            entries: fc.array(fc.jsonValue()),
          })
            .map((j) => JSON.stringify(j)),
          tocEntries(100).map((es) => JSON.stringify({ version: 1, entries: es })),
          fc.string({ unit: "binary", maxLength: 200 }),
          fc.nat(5000).map((n) => "[".repeat(n)),
        ),
        async (json) => {
          await onlyTyped(() => decodeToc(new TextEncoder().encode(json)));
        },
      ),
  },
  {
    name: "tar",
    ciRuns: 150,
    property: () =>
      fc.asyncProperty(
        fc.oneof(
          fc.array(tarSpec, { maxLength: 6 }).map((s) => buildTar(s)),
          fc.tuple(hostileName, fc.uint8Array({ maxLength: 600 })).map(([n, d]) =>
            gnuLongName(n, d)
          ),
        ),
        fc.array(mutation, { maxLength: 4 }),
        async (tar, ms) => {
          await onlyTyped(() => readAllTar(mutate(tar, ms)));
        },
      ),
  },
  {
    name: "tar-roundtrip",
    ciRuns: 60,
    property: () =>
      fc.asyncProperty(
        fc.array(
          fc.record({
            name: fc.stringMatching(/^[a-zA-Z0-9é._-]{1,40}(\/[a-zA-Z0-9._-]{1,60}){0,4}$/),
            data: fc.uint8Array({ maxLength: 1500 }),
          }),
          { maxLength: 5 },
        ),
        async (files) => {
          const tar = buildTar(files.map((f) => ({ ...f, type: "reg" as const })));
          assert.deepEqual(await readAllTar(tar), files.map((f) => f.name));
          const gnu = gnuLongName("l/" + "n".repeat(150), new Uint8Array(3));
          assert.deepEqual(await readAllTar(gnu), ["l/" + "n".repeat(150)]);
        },
      ),
  },
  {
    name: "chunk-decode",
    ciRuns: 200,
    property: () =>
      fc.asyncProperty(
        fc.constantFrom("gzip" as const, "zstd" as const),
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc.tuple(fc.uint8Array({ maxLength: 3000 }), fc.array(mutation, { maxLength: 3 }))
            .map(([d, ms]) => mutate(zlib.gzipSync(d), ms)),
          fc.tuple(fc.uint8Array({ maxLength: 3000 }), fc.array(mutation, { maxLength: 3 }))
            .map(([d, ms]) => mutate(zlib.zstdCompressSync(d), ms)),
        ),
        fc.nat(4000),
        fc.nat(100),
        async (format, bytes, chunkSize, innerOffset) => {
          const chunk: Chunk = {
            path: "f",
            chunkOffset: 0,
            chunkSize,
            chunkDigest: sha256(new Uint8Array(chunkSize)),
            compressedOffset: 0,
            compressedEnd: bytes.length,
            innerOffset,
          };
          const out = await onlyTyped(() => decodeChunk(format, chunk, bytes));
          if (out) assert.deepEqual(Buffer.from(out), Buffer.alloc(chunkSize));
        },
      ),
  },
  {
    name: "zstd-frames",
    ciRuns: 100,
    property: () =>
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 4000 }),
        fc.array(mutation, { maxLength: 3 }),
        async (data, ms) => {
          const b = mutate(
            Buffer.concat([zlib.zstdCompressSync(data), zlib.zstdCompressSync(data)]),
            ms,
          );
          await onlyTyped(async () => {
            for await (const _ of zstdFrames(new ByteSource(once(b)))) { /* drain */ }
          });
        },
      ),
  },
  {
    name: "index",
    ciRuns: 300,
    property: () =>
      fc.asyncProperty(tocEntries(600), async (entries) => {
        const b = tocOnlyBlob(entries, 600);
        const blob = await onlyTyped(() => openBlob(memoryReader(b)));
        if (blob) checkIndex(blob);
      }),
  },
  {
    name: "blob",
    ciRuns: 120,
    property: () =>
      fc.asyncProperty(
        fc.constantFrom("gzip" as const, "zstd" as const),
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        async (format, ms, verify) => {
          const s = await sample(format);
          await openAndRead(mutate(s.blob, ms), s, verify ? s.tocDigest : undefined);
        },
      ),
  },
  {
    name: "layer-read",
    ciRuns: 60,
    property: () =>
      fc.asyncProperty(
        fc.constantFrom("gzip" as const, "zstd" as const),
        fc.array(mutation, { maxLength: 3 }),
        fc.array(fc.tuple(fc.nat(4000), fc.nat(4000)), { minLength: 1, maxLength: 4 }),
        fc.constantFrom(0, 4096),
        async (format, ms, reads, minFetch) => {
          const s = await sample(format);
          await readLayer(mutate(s.blob, ms), s, reads, minFetch);
        },
      ),
  },
  {
    name: "convert",
    ciRuns: 25,
    property: () =>
      fc.asyncProperty(
        fc.array(tarSpec, { maxLength: 5 }),
        fc.array(mutation, { maxLength: 3 }),
        fc.constantFrom("gzip" as const, "zstd" as const),
        fc.constantFrom("plain", "gzip", "zstd"),
        fc.array(mutation, { maxLength: 2 }),
        async (specs, ms, format, input, outer) => {
          let tar = mutate(buildTar(specs), ms);
          if (input === "gzip") tar = mutate(zlib.gzipSync(tar), outer);
          if (input === "zstd") tar = mutate(zlib.zstdCompressSync(tar), outer);
          const parts: Uint8Array[] = [];
          const res = await onlyTyped(() =>
            convertLayer(tar, {
              write: (c: Uint8Array) => Promise.resolve(parts.push(new Uint8Array(c))),
            }, { format, chunkSize: 512, workers: 0, level: 1 })
          );
          if (!res) return;
          // What the converter wrote opens, verified, with every chunk intact.
          const blob = await openBlob(memoryReader(Buffer.concat(parts)), {
            expectedTocDigest: res.tocDigest,
          });
          checkIndex(blob);
          await blob.verifyAll();
        },
      ),
  },
];
