/**
 * Damaged and hostile blobs: each corruption gives its own typed error (and names the entry or
 * offset where the issue says so). Also the legacy and external-TOC footers.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import {
  type BlobReader,
  ChunkDigestMismatchError,
  convertLayer,
  encodeGzipFooter,
  encodeLegacyFooter,
  encodeToc,
  EstargzError,
  FooterError,
  InvalidEntryError,
  openBlob,
  OutOfRangeError,
  type Toc,
  TocDigestMismatchError,
  TocError,
} from "../src/estargz/mod.ts";
import { buildTar, randomBytes, sha256, TEST_CHUNK } from "./estargz_fixtures.ts";

function memReader(b: Uint8Array): BlobReader {
  return {
    size: b.length,
    read(offset, length) {
      if (offset < 0 || offset + length > b.length) return Promise.reject(new RangeError("range"));
      return Promise.resolve(b.slice(offset, offset + length));
    },
  };
}

/** A gzip eStargz blob made of `data` (the data region) and an arbitrary TOC. */
function craftGzip(data: Uint8Array, toc: Toc): Uint8Array {
  const tocTar = buildTar([{
    name: "stargz.index.json",
    type: "reg",
    data: encodeToc(toc),
    mode: 0,
  }]);
  return Buffer.concat([data, zlib.gzipSync(tocTar), encodeGzipFooter(data.length)]);
}

async function rejectsWith<E extends EstargzError>(
  p: Promise<unknown>,
  cls: new (...a: never[]) => E,
  check?: (e: E) => void,
): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
    check?.(err as E);
    return true;
  });
}

describe("estargz corruptions", () => {
  let dir: string;
  let blob: Uint8Array;
  let zblob: Uint8Array;
  let tocDigest: string;
  let ztocDigest: string;
  const content = randomBytes(3 * TEST_CHUNK, 7);

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "estargz-bad-"));
    const tar = buildTar([
      { name: "dir/", type: "dir", mode: 0o755 },
      { name: "dir/file", type: "reg", data: content },
    ]);
    const r = await convertLayer(tar, path.join(dir, "g"), { chunkSize: TEST_CHUNK });
    const z = await convertLayer(tar, path.join(dir, "z"), {
      chunkSize: TEST_CHUNK,
      format: "zstd",
    });
    blob = new Uint8Array(fs.readFileSync(path.join(dir, "g")));
    zblob = new Uint8Array(fs.readFileSync(path.join(dir, "z")));
    tocDigest = r.tocDigest;
    ztocDigest = z.tocDigest;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("opens the intact blobs", async () => {
    for (const b of [blob, zblob]) {
      const eb = await openBlob(memReader(b));
      assert.equal(await eb.verifyAll(), 4);
    }
  });

  it("flipped byte in a chunk: error names the file and offset", async () => {
    const eb = await openBlob(memReader(blob));
    const c = eb.chunks("dir/file")[1];
    for (const b of [blob]) {
      const bad = b.slice();
      bad[c.compressedOffset + 40] ^= 0xff;
      const broken = await openBlob(memReader(bad));
      await assert.rejects(broken.readChunk(c), (err: unknown) => {
        assert.ok(err instanceof EstargzError);
        assert.ok(["chunk-digest", "chunk-decode"].includes(err.code));
        assert.match(err.message, /"dir\/file" at offset 65536/);
        return true;
      });
    }
  });

  it("content that decompresses but differs: ChunkDigestMismatchError", async () => {
    const eb = await openBlob(memReader(blob));
    const toc = await eb.readToc();
    const wrong = toc.entries.find((e) => e.type === "chunk" && e.chunkOffset === 2 * TEST_CHUNK)!;
    wrong.chunkDigest = sha256(new Uint8Array(1));
    const crafted = craftGzip(blob.subarray(0, eb.tocOffset), toc);
    const broken = await openBlob(memReader(crafted));
    await rejectsWith(
      broken.readChunk(broken.chunks("dir/file")[2]),
      ChunkDigestMismatchError,
      (e) => {
        assert.equal(e.path, "dir/file");
        assert.equal(e.chunkOffset, 2 * TEST_CHUNK);
      },
    );
    await rejectsWith(broken.verifyAll(), ChunkDigestMismatchError);
    // The TOC changed, so the expected digest no longer matches.
    await rejectsWith(
      openBlob(memReader(crafted), { expectedTocDigest: tocDigest }),
      TocDigestMismatchError,
    );
  });

  it("an extent that inflates far beyond its chunk is refused before it exhausts memory", async () => {
    const eb = await openBlob(memReader(blob));
    const c = eb.chunks("dir/file")[0];
    const bomb = zlib.gzipSync(new Uint8Array(80 << 20));
    await assert.rejects(
      Promise.resolve().then(() => eb.decodeChunk(c, bomb)),
      (err: unknown) => {
        assert.ok(err instanceof EstargzError && err.code === "chunk-decode", String(err));
        assert.match(err.message, /"dir\/file" at offset 0/);
        return true;
      },
    );
  });

  it("flipped byte in the TOC", async () => {
    const eb = await openBlob(memReader(blob));
    const bad = blob.slice();
    bad[eb.tocOffset + 30] ^= 0x55;
    await rejectsWith(openBlob(memReader(bad)), TocError);
    const zeb = await openBlob(memReader(zblob));
    const zbad = zblob.slice();
    zbad[zeb.footer.tocOffset + 20] ^= 0x55;
    await assert.rejects(
      openBlob(memReader(zbad), { expectedTocDigest: ztocDigest }),
      (err: unknown) => {
        assert.ok(err instanceof TocError || err instanceof TocDigestMismatchError, String(err));
        return true;
      },
    );
  });

  it("wrong expected TOC digest", async () => {
    await rejectsWith(
      openBlob(memReader(blob), { expectedTocDigest: sha256(new Uint8Array(0)) }),
      TocDigestMismatchError,
      (e) => assert.equal(e.actual, tocDigest),
    );
  });

  it("flipped byte in the footer, truncated blob", async () => {
    for (const b of [blob, zblob]) {
      const bad = b.slice();
      bad[bad.length - 30] ^= 0xff;
      await rejectsWith(openBlob(memReader(bad)), FooterError);
      await rejectsWith(openBlob(memReader(b.subarray(0, b.length - 7))), FooterError);
      await rejectsWith(openBlob(memReader(b.subarray(0, 30))), FooterError);
    }
  });

  it("TOC entry pointing past the end", async () => {
    const eb = await openBlob(memReader(blob));
    const toc = await eb.readToc();
    toc.entries.find((e) => e.type === "chunk")!.offset = eb.tocOffset + 100;
    await rejectsWith(
      openBlob(memReader(craftGzip(blob.subarray(0, eb.tocOffset), toc))),
      OutOfRangeError,
      (e) => assert.equal(e.entryName, "dir/file"),
    );
  });

  it("traversal and NUL names make the blob invalid, naming the entry", async () => {
    const eb = await openBlob(memReader(blob));
    const data = blob.subarray(0, eb.tocOffset);
    const cases: [string, Toc["entries"]][] = [
      ["../etc/passwd", [{ name: "../etc/passwd", type: "reg" }]],
      ["a/../../x", [{ name: "a/../../x", type: "dir" }]],
      ["/abs", [{ name: "/abs", type: "dir" }]],
      ["nul\0name", [{ name: "nul\0name", type: "reg" }]],
      ["link", [{ name: "f", type: "reg" }, {
        name: "link",
        type: "hardlink",
        linkName: "../../f",
      }]],
    ];
    for (const [bad, entries] of cases) {
      await rejectsWith(
        openBlob(memReader(craftGzip(data, { version: 1, entries }))),
        InvalidEntryError,
        (e) => assert.equal(e.entryName, bad),
      );
    }
    // The converter refuses such names too.
    const tar = buildTar([{ name: "../evil", type: "reg", data: new Uint8Array(1) }]);
    await rejectsWith(convertLayer(tar, path.join(dir, "evil"), { workers: 0 }), InvalidEntryError);
    assert.equal(fs.existsSync(path.join(dir, "evil")), false, "no half-written blob is left");
  });

  it("legacy 47-byte footer opens", async () => {
    const eb = await openBlob(memReader(blob));
    const legacy = Buffer.concat([
      blob.subarray(0, blob.length - 51),
      encodeLegacyFooter(eb.tocOffset),
    ]);
    const lb = await openBlob(memReader(legacy), { expectedTocDigest: tocDigest });
    assert.equal(lb.format, "legacy-gzip");
    assert.equal(await lb.verifyAll(), 4);
  });

  it("external TOC footer is reported as such", async () => {
    const sub = new TextEncoder().encode("STARGZEXTERNALTOC");
    const footer = new Uint8Array(46);
    footer.set([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 21, 0, 0x53, 0x47, 17, 0], 0);
    footer.set(sub, 16);
    footer.set([1, 0, 0, 0xff, 0xff], 33);
    const ext = Buffer.concat([blob.subarray(0, 1000), footer]);
    await rejectsWith(
      openBlob(memReader(ext)),
      FooterError,
      (e) => assert.equal(e.code, "external-toc"),
    );
  });
});
