/**
 * Streaming decompression of zstd input made of several frames (zstd:chunked layers, `pzstd`
 * output, concatenated files). Deno's zstd stream stops after the first frame, so the input is
 * split at frame boundaries here (frame and block headers carry every length, RFC 8878) and each
 * frame gets its own decompressor. Skippable frames are dropped.
 */
import { pipeline, Readable } from "node:stream";
import * as zlib from "node:zlib";
import { TarError } from "./errors.ts";
import type { ByteSource } from "./_tar.ts";

const PIECE = 1 << 20;

async function need(src: ByteSource, n: number): Promise<Uint8Array> {
  const b = await src.readExact(n);
  if (!b) throw new TarError("zstd input ends inside a frame");
  return b;
}

/** The raw bytes of one zstd frame whose 4-byte magic was already read. */
async function* frameBytes(src: ByteSource, magic: Uint8Array): AsyncGenerator<Uint8Array> {
  yield magic;
  const fhd = await need(src, 1);
  yield fhd;
  const d = fhd[0];
  const single = (d >> 5) & 1;
  const fcsFlag = d >> 6;
  const headerRest = (single ? 0 : 1) + [0, 1, 2, 4][d & 3] +
    [single ? 1 : 0, 2, 4, 8][fcsFlag];
  if (headerRest) yield await need(src, headerRest);
  for (;;) {
    const bh = await need(src, 3);
    yield bh;
    const v = bh[0] | (bh[1] << 8) | (bh[2] << 16);
    const last = v & 1;
    const type = (v >> 1) & 3;
    if (type === 3) throw new TarError("zstd input has a reserved block type");
    let left = type === 1 ? 1 : v >>> 3;
    while (left > 0) {
      const part = await src.readSome(Math.min(left, PIECE));
      if (!part) throw new TarError("zstd input ends inside a block");
      yield Uint8Array.prototype.slice.call(part);
      left -= part.length;
    }
    if (last) break;
  }
  if ((d >> 2) & 1) yield await need(src, 4);
}

/** Decompresses every frame of a zstd stream in order. */
export async function* zstdFrames(src: ByteSource): AsyncGenerator<Uint8Array> {
  for (;;) {
    const magic = await src.readExact(4);
    if (!magic) return;
    if ((magic[0] & 0xf0) === 0x50 && magic[1] === 0x2a && magic[2] === 0x4d && magic[3] === 0x18) {
      const size = await need(src, 4);
      let left = new DataView(size.buffer).getUint32(0, true);
      while (left > 0) {
        const part = await src.readSome(Math.min(left, PIECE));
        if (!part) throw new TarError("zstd input ends inside a skippable frame");
        left -= part.length;
      }
      continue;
    }
    if (magic[0] !== 0x28 || magic[1] !== 0xb5 || magic[2] !== 0x2f || magic[3] !== 0xfd) {
      throw new TarError("zstd input holds data that is not a zstd frame");
    }
    // pipeline, not pipe: a frame cut short must reject the read, not emit an unhandled error.
    const d = pipeline(
      Readable.from(frameBytes(src, magic)),
      zlib.createZstdDecompress(),
      () => {},
    );
    try {
      for await (const out of d) yield out as Uint8Array;
    } catch (err) {
      if (err instanceof TarError) throw err;
      throw new TarError(`corrupt zstd frame: ${(err as Error).message}`);
    }
  }
}
