import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import { FooterError } from "./errors.ts";
import {
  encodeGzipFooter,
  encodeLegacyFooter,
  encodeZstdFooterFrame,
  GZIP_FOOTER_SIZE,
  LEGACY_FOOTER_SIZE,
  parseFooter,
} from "./footer.ts";

describe("footers", () => {
  it("gzip footer: 51 bytes, an empty gzip member, round trips", () => {
    const f = encodeGzipFooter(0x123456789a);
    assert.equal(f.length, GZIP_FOOTER_SIZE);
    assert.equal(zlib.gunzipSync(f).length, 0);
    const tail = new Uint8Array(200);
    tail.set(f, 200 - f.length);
    assert.deepEqual(parseFooter(tail, 0x123456789a + 1000), {
      format: "gzip",
      footerSize: 51,
      tocOffset: 0x123456789a,
      dataEnd: 0x123456789a,
    });
    assert.equal(
      new TextDecoder().decode(f.subarray(16, 38)),
      "000000123456789aSTARGZ",
    );
  });

  it("legacy footer: 47 bytes", () => {
    const f = encodeLegacyFooter(4096);
    assert.equal(f.length, LEGACY_FOOTER_SIZE);
    assert.equal(zlib.gunzipSync(f).length, 0);
    const p = parseFooter(f, 10000);
    assert.equal(p.format, "legacy-gzip");
    assert.equal(p.tocOffset, 4096);
  });

  it("zstd:chunked footer: a 40-byte skippable-frame payload", () => {
    const frame = encodeZstdFooterFrame(1008, 300, 900);
    assert.equal(frame.length, 48);
    // zstd tools skip it: a frame followed by the footer still decompresses.
    const data = zlib.zstdCompressSync(Buffer.from("x"));
    assert.equal(zlib.zstdDecompressSync(Buffer.concat([data, frame])).toString(), "x");
    const p = parseFooter(frame, 2000);
    assert.equal(p.format, "zstd");
    assert.equal(p.tocOffset, 1008);
    assert.equal(p.dataEnd, 1000);
    assert.equal(p.tocCompressedSize, 300);
    assert.equal(p.tocUncompressedSize, 900);
  });

  it("rejects garbage, offsets past the end, and tiny blobs", () => {
    assert.throws(() => parseFooter(new Uint8Array(64), 1000), FooterError);
    assert.throws(() => parseFooter(encodeGzipFooter(5000), 1000), FooterError);
    assert.throws(() => parseFooter(encodeZstdFooterFrame(1008, 5000, 1), 2000), FooterError);
    assert.throws(() => parseFooter(new Uint8Array(10), 10), FooterError);
  });
});
