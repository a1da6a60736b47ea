/**
 * The read path of one layer: (file, offset, length) → the chunks covering it → chunk cache →
 * on a miss, one range request for all missing extents (multi-range when they are not
 * adjacent) → decompress (one inflate per member, shared by every reader waiting for any of its
 * chunks) → verify → serve, the cache write following behind. Unverified bytes are never
 * returned.
 * Prefetch and background fetch use the same path for whole blob ranges.
 */
import { createHash } from "node:crypto";
import type { Chunk, EstargzBlob, EstargzError, Member } from "../estargz/mod.ts";
import type { Logger } from "../log/mod.ts";
import { chunkKey } from "./_chunk_cache.ts";
import type { ChunkCache } from "./_chunk_cache.ts";
import type { Range } from "./_regions.ts";
import { RegionSet } from "./_regions.ts";
import { METRICS, observeMs, observeUs, Operation } from "../metrics/mod.ts";

/** Random access to ranges of the compressed blob (a registry blob or a local file). */
export interface RangeSource {
  readonly size: number;
  /** The bytes of each `[start, end)` range, in order. */
  readRanges(ranges: readonly Range[]): Promise<Uint8Array[]>;
}

/** One compressed extent (gzip member / zstd frame) and the chunks it holds. */
type Extent = Member;

/** Ranges adjacent in the blob are fetched as one range; this caps one merged range. */
const MAX_MERGED_RANGE = 16 << 20;
/**
 * Decoded bytes whose cache write may still be under way before decoding waits for the disk:
 * reads are answered without waiting for their cache write, up to this much.
 */
const WRITE_BEHIND_BYTES = 64 << 20;

/** A member's chunks, decoded and verified (or the error of each one that failed). */
type Decoded = Map<Chunk, Uint8Array | EstargzError>;

/** Reads the files of one layer through the cache. */
export class LayerReader {
  /** Compressed byte ranges of the blob that have been fetched (footer and TOC included). */
  readonly fetched = new RegionSet();
  /** Extents sorted by blob offset. */
  readonly #extents: readonly Extent[];
  readonly #inflight = new Map<number, Promise<Uint8Array>>();
  /** Members being decoded: every waiter of any of their chunks shares the one inflate. */
  readonly #decoding = new Map<Extent, Promise<Decoded>>();
  readonly #writes = new Set<Promise<void>>();
  #writeBehind = 0;

  /**
   * @param minFetchBytes a miss also fetches the extents that follow it in the blob until the
   *   range holds this many bytes (`[blob] chunk_size`): the small files packed next to each other
   *   in a layer then arrive together, and the registry answers one request instead of many.
   */
  constructor(
    readonly blob: EstargzBlob,
    readonly source: RangeSource,
    readonly cache: ChunkCache,
    readonly layerDigest: string,
    readonly minFetchBytes = 0,
    /** Where failed cache writes are reported (the read they came from was answered). */
    readonly log?: Logger,
  ) {
    this.#extents = blob.index.members;
    // The footer and TOC were fetched to open the blob.
    this.fetched.add(blob.tocOffset, source.size);
  }

  /** The extent holding `c` (extents start where their chunks' `compressedOffset` says). */
  #extentOf(c: Chunk): Extent {
    const list = this.#extents;
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].start < c.compressedOffset) lo = mid + 1;
      else hi = mid;
    }
    return list[lo];
  }

  /** The cache key of a chunk: its digest, or (for blobs without chunk digests) its position. */
  keyOf(chunk: Chunk): string {
    if (chunk.chunkDigest) return chunkKey(chunk.chunkDigest);
    return createHash("sha256")
      .update(
        `${this.layerDigest}\0${chunk.compressedOffset}\0${chunk.innerOffset}\0${chunk.chunkOffset}`,
      )
      .digest("hex");
  }

  /** Reads `length` bytes at `offset` of the regular file `path` (short at end of file). */
  async read(path: string, size: number, offset: number, length: number): Promise<Uint8Array> {
    const end = Math.min(size, offset + length);
    if (offset >= end) return new Uint8Array(0);
    const started = performance.now();
    const op = { layer: this.layerDigest };
    METRICS.operationCount.add({ ...op, operation_type: Operation.onDemandReadAccessCount });
    const chunks = this.#chunksIn(path, offset, end);
    let covered = offset;
    for (const c of chunks) {
      if (c.chunkOffset <= covered) covered = Math.max(covered, c.chunkOffset + c.chunkSize);
    }
    if (covered < end) {
      throw new Error(`${path}: no chunk holds bytes ${covered}..${end} of the file`);
    }
    const datas = await this.#load(chunks);
    METRICS.bytesServed.add({ ...op, operation_type: Operation.onDemandBytesServed }, end - offset);
    observeUs(Operation.readOnDemand, this.layerDigest, started);
    if (chunks.length === 1) {
      const c = chunks[0];
      return datas[0].subarray(offset - c.chunkOffset, end - c.chunkOffset);
    }
    const out = new Uint8Array(end - offset);
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i];
      const from = Math.max(offset, c.chunkOffset);
      const to = Math.min(end, c.chunkOffset + c.chunkSize);
      out.set(datas[i].subarray(from - c.chunkOffset, to - c.chunkOffset), from - offset);
    }
    return out;
  }

  #chunksIn(path: string, start: number, end: number): Chunk[] {
    const all = this.blob.chunks(path);
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[mid].chunkOffset + all[mid].chunkSize <= start) lo = mid + 1;
      else hi = mid;
    }
    const out: Chunk[] = [];
    for (let i = lo; i < all.length && all[i].chunkOffset < end; i++) out.push(all[i]);
    return out;
  }

  /** The verified bytes of each chunk, from the cache or fetched in one batch. */
  async #load(chunks: readonly Chunk[]): Promise<Uint8Array[]> {
    const out: (Uint8Array | undefined)[] = await Promise.all(
      chunks.map((c) => this.cache.get(this.keyOf(c))),
    );
    const missing = new Set<Extent>();
    chunks.forEach((c, i) => {
      if (!out[i]) missing.add(this.#extentOf(c));
    });
    if (missing.size === 0) return out as Uint8Array[];
    // Members already fetched and being decoded are joined, not fetched again.
    const wanted = [...missing].filter((e) => !this.#decoding.has(e));
    const ahead = this.#readAhead(wanted);
    const fetching = [...wanted, ...ahead];
    const op = { layer: this.layerDigest };
    METRICS.operationCount.add({
      ...op,
      operation_type: Operation.onDemandRemoteRegistryFetchCount,
    });
    METRICS.bytesServed.add(
      { ...op, operation_type: Operation.onDemandBytesFetched },
      fetching.reduce((n, e) => n + e.end - e.start, 0),
    );
    const extentBytes = this.#fetchExtents(fetching);
    for (const e of ahead) {
      // Neighbours are decoded into the cache after the read is answered; a bad one only
      // fails when something reads it.
      this.#decode(e, extentBytes.get(e)!).catch(() => {});
    }
    await Promise.all(chunks.map(async (c, i) => {
      if (out[i]) return;
      const ext = this.#extentOf(c);
      const got = (await (this.#decoding.get(ext) ?? this.#decode(ext, extentBytes.get(ext)!)))
        .get(c)!;
      if (!(got instanceof Uint8Array)) throw got;
      out[i] = got;
    }));
    return out as Uint8Array[];
  }

  /**
   * Decodes every chunk of a member once `bytes` arrive, shared by all who ask meanwhile, and
   * stores the ones not yet cached (write-behind: see {@link WRITE_BEHIND_BYTES}).
   */
  #decode(ext: Extent, bytes: Promise<Uint8Array>): Promise<Decoded> {
    const running = this.#decoding.get(ext);
    if (running) return running;
    const p = bytes.then(async (data) => {
      const results = await this.blob.decodeMemberAsync(ext.chunks, data);
      const decoded: Decoded = new Map();
      ext.chunks.forEach((c, i) => {
        const r = results[i];
        decoded.set(c, r);
        const key = this.keyOf(c);
        if (r instanceof Uint8Array && !this.cache.has(key)) this.#store(key, r);
      });
      while (this.#writeBehind > WRITE_BEHIND_BYTES) await Promise.race(this.#writes);
      return decoded;
    });
    this.#decoding.set(ext, p);
    p.finally(() => this.#decoding.delete(ext)).catch(() => {});
    return p;
  }

  /** Writes a chunk to the cache without holding up the read it was decoded for. */
  #store(key: string, data: Uint8Array): void {
    this.#writeBehind += data.length;
    const w: Promise<void> = this.cache.put(key, data)
      .catch((err) => this.log?.warn("chunk cache write failed", { error: err }))
      .finally(() => {
        this.#writeBehind -= data.length;
        this.#writes.delete(w);
      });
    this.#writes.add(w);
  }

  /**
   * The uncached, not-in-flight extents that directly follow `wanted` ones, until each range
   * reaches {@link minFetchBytes}.
   */
  #readAhead(wanted: readonly Extent[]): Extent[] {
    if (this.minFetchBytes <= 0) return [];
    const taken = new Set(wanted);
    const extra: Extent[] = [];
    for (const w of [...wanted].sort((a, b) => a.start - b.start)) {
      let end = w.end;
      for (let i = w.index + 1; i < this.#extents.length; i++) {
        const e = this.#extents[i];
        if (end - w.start >= this.minFetchBytes || e.end - w.start > this.minFetchBytes) break;
        if (e.start !== end || this.#inflight.has(e.start) || this.#decoding.has(e)) break;
        end = e.end;
        if (taken.has(e) || e.chunks.every((c) => this.cache.has(this.keyOf(c)))) continue;
        taken.add(e);
        extra.push(e);
      }
    }
    return extra;
  }

  /** Starts (or joins) the fetch of each extent; adjacent extents share one range. */
  #fetchExtents(extents: Extent[]): Map<Extent, Promise<Uint8Array>> {
    const result = new Map<Extent, Promise<Uint8Array>>();
    const toFetch: Extent[] = [];
    for (const e of extents) {
      const running = this.#inflight.get(e.start);
      if (running) result.set(e, running);
      else toFetch.push(e);
    }
    if (toFetch.length === 0) return result;
    toFetch.sort((a, b) => a.start - b.start);
    const groups: Extent[][] = [];
    for (const e of toFetch) {
      const g = groups[groups.length - 1];
      if (g && g[g.length - 1].end === e.start && e.end - g[0].start <= MAX_MERGED_RANGE) g.push(e);
      else groups.push([e]);
    }
    const ranges: Range[] = groups.map((g) => [g[0].start, g[g.length - 1].end]);
    const started = performance.now();
    const batch = this.source.readRanges(ranges).then((datas) => {
      observeMs(Operation.remoteRegistryGet, this.layerDigest, started);
      ranges.forEach(([s, e]) => this.fetched.add(s, e));
      return datas;
    });
    groups.forEach((g, gi) => {
      for (const e of g) {
        const p = batch.then((datas) =>
          datas[gi].subarray(e.start - g[0].start, e.end - g[0].start)
        );
        const tracked = p.finally(() => this.#inflight.delete(e.start));
        // Consumers get `p`; the bookkeeping copy must not report an unhandled rejection.
        tracked.catch(() => {});
        this.#inflight.set(e.start, p);
        result.set(e, p);
      }
    });
    return result;
  }

  /**
   * Fetches every extent that starts in `[start, end)` of the blob and is not fully cached,
   * decodes it into the cache, and returns the number of compressed bytes fetched. Used by
   * prefetch and background fetch; `maxRange` bounds a single request.
   */
  async fetchBlobRange(start: number, end: number, maxRange = 4 << 20): Promise<number> {
    const wanted = this.#extents.filter((e) =>
      e.start >= start && e.start < end && e.chunks.some((c) => !this.cache.has(this.keyOf(c)))
    );
    let fetchedBytes = 0;
    for (let i = 0; i < wanted.length;) {
      let j = i + 1;
      while (
        j < wanted.length && wanted[j].start === wanted[j - 1].end &&
        wanted[j].end - wanted[i].start <= maxRange
      ) j++;
      const group = wanted.slice(i, j).filter((e) => !this.#decoding.has(e));
      const bytes = this.#fetchExtents(group);
      for (const e of group) {
        for (const r of (await this.#decode(e, bytes.get(e)!)).values()) {
          if (!(r instanceof Uint8Array)) throw r;
        }
        fetchedBytes += e.end - e.start;
      }
      i = j;
    }
    return fetchedBytes;
  }

  /**
   * Fetches the extents holding `chunks` that are not cached, all in one batch (one multi-range
   * request where the registry allows), decodes them into the cache, and returns the number of
   * compressed bytes fetched. Extents already being fetched are joined, not fetched twice.
   */
  async fetchChunks(chunks: readonly Chunk[]): Promise<number> {
    const wanted = new Set<Extent>();
    for (const c of chunks) {
      const e = this.#extentOf(c);
      if (!wanted.has(e) && e.chunks.some((x) => !this.cache.has(this.keyOf(x)))) wanted.add(e);
    }
    const list = [...wanted].sort((a, b) => a.start - b.start);
    const fetching = list.filter((e) => !this.#decoding.has(e));
    const bytes = this.#fetchExtents(fetching);
    let fetchedBytes = 0;
    // One extent at a time, as prefetch does: decoding them all at once would fill the runtime's
    // thread pool, and the snapshotter's file system calls wait in that same pool.
    for (const e of list) {
      const decoded = await (this.#decoding.get(e) ?? this.#decode(e, bytes.get(e)!));
      for (const r of decoded.values()) if (!(r instanceof Uint8Array)) throw r;
      if (fetching.includes(e)) fetchedBytes += e.end - e.start;
    }
    return fetchedBytes;
  }

  /** The extents' blob ranges that are not yet fetched (for background fetch planning). */
  unfetched(): Range[] {
    return this.fetched.missing(0, this.blob.tocOffset);
  }

  /** Sum of compressed bytes of all extents (the part of the blob that holds file data). */
  get dataSize(): number {
    return this.blob.tocOffset;
  }
}
