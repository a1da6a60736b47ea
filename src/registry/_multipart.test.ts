import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { multipartBoundary, parseContentRange, readMultipart } from "./_multipart.ts";

function streamOf(text: string, chunk: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(bytes.slice(off, off + chunk));
      off += chunk;
    },
  });
}

describe("multipart/byteranges", () => {
  const body = [
    "preamble\r\n",
    "--XyZ\r\n",
    "Content-Type: application/octet-stream\r\n",
    "Content-Range: bytes 0-3/100\r\n",
    "\r\n",
    "ab\r\n",
    "\r\n--XyZ\r\n",
    "content-range: bytes 90-94/100\r\n",
    "\r\n",
    "--XyZ",
    "\r\n--XyZ--\r\n",
  ].join("");

  for (const chunk of [1, 3, 7, 1000]) {
    it(`parses parts split in ${chunk}-byte chunks, data that looks like delimiters included`, async () => {
      const parts = await readMultipart(streamOf(body, chunk), "XyZ");
      assert.deepEqual(
        parts.map((p) => [p.start, new TextDecoder().decode(p.data)]),
        [[0, "ab\r\n"], [90, "--XyZ"]],
      );
    });
  }

  it("fails on a truncated body", async () => {
    await assert.rejects(readMultipart(streamOf(body.slice(0, 120), 5), "XyZ"));
  });

  it("reads boundaries and content ranges", () => {
    assert.equal(
      multipartBoundary("multipart/byteranges; boundary=3d6b6a416f9b5"),
      "3d6b6a416f9b5",
    );
    assert.equal(multipartBoundary('multipart/byteranges; boundary="a b"'), "a b");
    assert.equal(multipartBoundary("application/octet-stream"), undefined);
    assert.deepEqual(parseContentRange("bytes 5-9/10"), { start: 5, end: 9, total: 10 });
    assert.deepEqual(parseContentRange("bytes 5-9/*"), { start: 5, end: 9 });
    assert.throws(() => parseContentRange("bytes 9-5/10"));
    assert.throws(() => parseContentRange(null));
  });
});
