/**
 * The read path of one layer: (file, offset, length) → the chunks covering it → chunk cache →
 * on a miss, the missing extents join the batch of this turn of the event loop, and the batch goes
 * out as one range request (multi-range when its extents are not adjacent), so concurrent misses
 * in different files cost one round trip → decompress (one inflate per member, shared by every
 * reader waiting for any of its chunks) → verify → copy into the caller's buffer, the cache write
 * following behind. Unverified bytes are never returned. A sequential reader of a file gets
 * read-ahead that doubles with every fetch it triggers, as the kernel's does. A read cancelled
 * (FUSE_INTERRUPT) before its batch is sent takes its extents out of it.
 * Prefetch and background fetch use the same path for whole blob ranges, sent at once.
 *
 * Byte ranges are merged in one place, by the source (`RemoteBlob.readRanges`): this reader asks
 * for each extent as its own range.
 */
import { createHash } from "node:crypto";
import { setImmediate } from "node:timers";
import { type Chunk, type EstargzBlob, EstargzError, type Member } from "../estargz/mod.ts";
import type { Logger } from "../log/mod.ts";
import { chunkKey } from "./_chunk_cache.ts";
import type { ChunkCache } from "./_chunk_cache.ts";
import type { Range } from "./_regions.ts";
import { RegionSet } from "./_regions.ts";
import { METRICS, observeMs, observeUs, Operation } from "../metrics/mod.ts";

/** Random access to ranges of the compressed blob (a registry blob or a local file). */
export interface RangeSource {
  readonly size: number;
  /**
   * The bytes of each `[start, end)` range, in order. A remote source merges adjacent ranges
   * into one; a local one may read each by itself.
   */
  readRanges(ranges: readonly Range[]): Promise<Uint8Array[]>;
}

/** One compressed extent (gzip member / zstd frame) and the chunks it holds. */
type Extent = Member;

/**
 * The largest read-ahead window of a sequential reader. The kernel's own read-ahead stops at
 * 128 KiB; a window here costs a registry round trip, so it may grow further — but every byte
 * of it is fetched whether the reader gets there or not.
 */
const MAX_READ_AHEAD = 2 << 20;
/**
 * Members of one chunk up to this compressed size are inflated on the event loop: a trip
 * through the thread pool costs more than inflating them, and a miss's read-ahead of dozens of
 * small files would otherwise queue there in front of the next read's big member.
 */
const INLINE_DECODE_BYTES = 32 << 10;
/** Files whose sequential read-ahead state is kept (the oldest is forgotten first). */
const MAX_STREAMS = 256;
/**
 * Decoded bytes whose cache write may still be under way before decoding waits for the disk:
 * reads are answered without waiting for their cache write, up to this much.
 */
const WRITE_BEHIND_BYTES = 64 << 20;

/** A member's chunks, decoded and verified (or the error of each one that failed). */
type Decoded = Map<Chunk, Uint8Array | EstargzError>;

/** An extent waiting in this turn's batch, and the reads that want it. */
interface Queued {
  owners: Set<object>;
  resolve(bytes: Uint8Array): void;
  reject(err: unknown): void;
}

/** Where a file's last read ended and the read-ahead window its next sequential read gets. */
interface Stream {
  start: number;
  next: number;
  window: number;
}

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
  /** On-demand misses of this turn of the event loop, sent together by {@link #flush}. */
  readonly #queue = new Map<Extent, Queued>();
  readonly #streams = new Map<string, Stream>();

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
  async read(
    path: string,
    size: number,
    offset: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<Uint8Array> {
    const out = new Uint8Array(Math.max(0, Math.min(size, offset + length) - offset));
    await this.readInto(path, size, offset, out, signal);
    return out;
  }

  /**
   * Reads bytes at `offset` of the regular file `path` straight into `dest` (a FUSE reply
   * buffer) and returns how many (short at end of file). `signal` cancels the read's fetches
   * while they still wait for their batch to be sent.
   */
  async readInto(
    path: string,
    size: number,
    offset: number,
    dest: Uint8Array,
    signal?: AbortSignal,
  ): Promise<number> {
    const end = Math.min(size, offset + dest.length);
    if (offset >= end) return 0;
    signal?.throwIfAborted();
    const started = performance.now();
    const op = { layer: this.layerDigest };
    METRICS.operationCount.add({ ...op, operation_type: Operation.onDemandReadAccessCount });
    const chunks = this.blob.chunksBetween(path, offset, end);
    let covered = offset;
    for (const c of chunks) {
      if (c.chunkOffset <= covered) covered = Math.max(covered, c.chunkOffset + c.chunkSize);
    }
    if (covered < end) {
      throw new Error(`${path}: no chunk holds bytes ${covered}..${end} of the file`);
    }
    const datas = await this.#load(chunks, this.#stream(path, offset, end), signal);
    METRICS.bytesServed.add({ ...op, operation_type: Operation.onDemandBytesServed }, end - offset);
    observeUs(Operation.readOnDemand, this.layerDigest, started);
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i];
      const from = Math.max(offset, c.chunkOffset);
      const to = Math.min(end, c.chunkOffset + c.chunkSize);
      dest.set(datas[i].subarray(from - c.chunkOffset, to - c.chunkOffset), from - offset);
    }
    return end - offset;
  }

  /**
   * The read-ahead state of `path` after a read of `[offset, end)`: a read that starts where the
   * last one ended (or inside it: the kernel sends its read-ahead pages concurrently) continues a
   * stream; any other read starts a new one at `[blob] chunk_size`.
   */
  #stream(path: string, offset: number, end: number): Stream | undefined {
    if (this.minFetchBytes <= 0) return undefined;
    const s = this.#streams.get(path);
    if (s && offset >= s.start && offset <= s.next) {
      s.start = offset;
      s.next = Math.max(s.next, end);
      return s;
    }
    this.#streams.delete(path);
    if (this.#streams.size >= MAX_STREAMS) {
      this.#streams.delete(this.#streams.keys().next().value!);
    }
    this.#streams.set(path, { start: offset, next: end, window: this.minFetchBytes });
    return undefined;
  }

  #cached(e: Extent): boolean {
    return e.chunks.every((c) => this.cache.has(this.keyOf(c)));
  }

  /** The verified bytes of each chunk, from the cache or fetched in this turn's batch. */
  async #load(
    chunks: readonly Chunk[],
    stream: Stream | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Uint8Array[]> {
    const out: (Uint8Array | undefined)[] = chunks.map((c) => this.cache.peek(this.keyOf(c)));
    if (out.some((d) => !d)) {
      await Promise.all(chunks.map(async (c, i) => {
        out[i] ??= await this.cache.get(this.keyOf(c));
      }));
    }
    const missing = new Set<Extent>();
    chunks.forEach((c, i) => {
      if (!out[i]) missing.add(this.#extentOf(c));
    });
    // Members already fetched and being decoded are joined, not fetched again.
    const wanted = [...missing].filter((e) => !this.#decoding.has(e));
    const ahead = stream
      ? this.#streamAhead(wanted, this.#extentOf(chunks[chunks.length - 1]), stream)
      : this.#readAhead(wanted);
    if (missing.size === 0 && ahead.length === 0) return out as Uint8Array[];
    const fetching = [...wanted, ...ahead];
    if (fetching.length > 0) {
      const op = { layer: this.layerDigest };
      METRICS.operationCount.add({
        ...op,
        operation_type: Operation.onDemandRemoteRegistryFetchCount,
      });
      METRICS.bytesServed.add(
        { ...op, operation_type: Operation.onDemandBytesFetched },
        fetching.reduce((n, e) => n + e.end - e.start, 0),
      );
    }
    const owner = {};
    // A read joining extents queued by another read keeps them in the batch if that one is
    // cancelled.
    for (const e of missing) this.#queue.get(e)?.owners.add(owner);
    const cancel = (): void => this.#cancel(owner);
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      signal?.throwIfAborted();
      const extentBytes = this.#enqueue(fetching, owner);
      // The read's own members are decoded first: they are what the reader waits for.
      const own = chunks.map((c, i) => {
        if (out[i]) return undefined;
        const ext = this.#extentOf(c);
        return this.#decoding.get(ext) ?? this.#decode(ext, extentBytes.get(ext)!);
      });
      for (const e of ahead) {
        // Neighbours are decoded into the cache after the read is answered; a bad one only
        // fails when something reads it.
        this.#decode(e, extentBytes.get(e)!).catch(() => {});
      }
      await Promise.all(own.map(async (decoding, i) => {
        if (!decoding) return;
        const got = (await decoding).get(chunks[i])!;
        if (!(got instanceof Uint8Array)) throw got;
        out[i] = got;
      }));
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
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
      const results = ext.chunks.length === 1 && data.length <= INLINE_DECODE_BYTES
        ? [this.#decodeInline(ext.chunks[0], data)]
        : await this.blob.decodeMemberAsync(ext.chunks, data);
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

  /** A small member's one chunk, decoded and verified at once (see {@link INLINE_DECODE_BYTES}). */
  #decodeInline(chunk: Chunk, data: Uint8Array): Uint8Array | EstargzError {
    try {
      return this.blob.decodeChunk(chunk, data);
    } catch (err) {
      if (err instanceof EstargzError) return err;
      throw err;
    }
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

  /** Neither cached nor being fetched or decoded. */
  #absent(e: Extent): boolean {
    return !this.#inflight.has(e.start) && !this.#decoding.has(e) && !this.#cached(e);
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
        if (taken.has(e) || this.#cached(e)) continue;
        taken.add(e);
        extra.push(e);
      }
    }
    return extra;
  }

  /**
   * Read-ahead of a sequential reader whose read ends in extent `last`: the absent extents of the
   * `stream.window` bytes that follow it in the blob, fetched when the read missed or when the
   * nearest absent one is within half a window (so the next fetch is under way before the reader
   * gets there, as the kernel's asynchronous read-ahead). Each fetch doubles the window up to
   * {@link MAX_READ_AHEAD}.
   */
  #streamAhead(wanted: readonly Extent[], last: Extent, stream: Stream): Extent[] {
    const taken = new Set(wanted);
    const limit = last.end + stream.window;
    const extra: Extent[] = [];
    let end = last.end;
    for (let i = last.index + 1; i < this.#extents.length; i++) {
      const e = this.#extents[i];
      if (e.start !== end || e.end > limit) break;
      end = e.end;
      if (taken.has(e) || !this.#absent(e)) continue;
      if (extra.length === 0 && wanted.length === 0 && e.start - last.end > stream.window / 2) {
        return [];
      }
      taken.add(e);
      extra.push(e);
    }
    if (extra.length > 0 || wanted.length > 0) {
      stream.window = Math.min(MAX_READ_AHEAD, Math.max(stream.window * 2, this.minFetchBytes));
    }
    return extra;
  }

  /**
   * Puts `extents` in this turn's batch for `owner` (joining those already queued or in flight),
   * and schedules the batch to be sent once the current turn of the event loop is over: misses
   * of concurrent reads, even of different files, then leave in one request.
   */
  #enqueue(extents: readonly Extent[], owner: object): Map<Extent, Promise<Uint8Array>> {
    const result = new Map<Extent, Promise<Uint8Array>>();
    for (const e of extents) {
      const running = this.#inflight.get(e.start);
      if (running) {
        this.#queue.get(e)?.owners.add(owner);
        result.set(e, running);
        continue;
      }
      const q: Queued = { owners: new Set([owner]), resolve: () => {}, reject: () => {} };
      const promise = new Promise<Uint8Array>((resolve, reject) => {
        q.resolve = resolve;
        q.reject = reject;
      });
      if (this.#queue.size === 0) setImmediate(() => this.#flush());
      this.#queue.set(e, q);
      this.#track(e, promise);
      result.set(e, promise);
    }
    return result;
  }

  /** Takes a cancelled read's extents out of the batch, unless another read wants them too. */
  #cancel(owner: object): void {
    for (const [e, q] of this.#queue) {
      if (!q.owners.delete(owner) || q.owners.size > 0) continue;
      this.#queue.delete(e);
      q.reject(new DOMException("read interrupted", "AbortError"));
    }
  }

  /** Sends this turn's batch. */
  #flush(): void {
    const batch = [...this.#queue];
    this.#queue.clear();
    if (batch.length === 0) return;
    const sent = this.#send(batch.map(([e]) => e));
    for (const [e, q] of batch) sent.get(e)!.then(q.resolve, q.reject);
  }

  /** Records `p` as the fetch of `e` until it settles. */
  #track(e: Extent, p: Promise<Uint8Array>): void {
    this.#inflight.set(e.start, p);
    // Consumers get `p`; the bookkeeping copy must not report an unhandled rejection.
    p.finally(() => {
      if (this.#inflight.get(e.start) === p) this.#inflight.delete(e.start);
    }).catch(() => {});
  }

  /** Starts (or joins) the fetch of each extent now, outside the batch (prefetch, background). */
  #fetchExtents(extents: readonly Extent[]): Map<Extent, Promise<Uint8Array>> {
    const result = new Map<Extent, Promise<Uint8Array>>();
    const toFetch: Extent[] = [];
    for (const e of extents) {
      const running = this.#inflight.get(e.start);
      if (running) result.set(e, running);
      else toFetch.push(e);
    }
    for (const [e, p] of this.#send(toFetch)) {
      this.#track(e, p);
      result.set(e, p);
    }
    return result;
  }

  /**
   * Fetches `extents` in one {@link RangeSource.readRanges} call, a range per extent: the source
   * merges adjacent ones (a registry blob into one range of one request).
   */
  #send(extents: readonly Extent[]): Map<Extent, Promise<Uint8Array>> {
    const result = new Map<Extent, Promise<Uint8Array>>();
    if (extents.length === 0) return result;
    const sorted = [...extents].sort((a, b) => a.start - b.start);
    const ranges: Range[] = sorted.map((e) => [e.start, e.end]);
    const started = performance.now();
    const batch = this.source.readRanges(ranges).then((datas) => {
      observeMs(Operation.remoteRegistryGet, this.layerDigest, started);
      ranges.forEach(([s, e]) => this.fetched.add(s, e));
      return datas;
    });
    sorted.forEach((e, i) => result.set(e, batch.then((datas) => datas[i])));
    return result;
  }

  /**
   * Fetches every extent that starts in `[start, end)` of the blob and is not fully cached,
   * decodes it into the cache, and returns the number of compressed bytes fetched. Used by
   * prefetch and background fetch; `maxRange` bounds a single request.
   */
  async fetchBlobRange(start: number, end: number, maxRange = 4 << 20): Promise<number> {
    const wanted = this.#extents.filter((e) =>
      e.start >= start && e.start < end && !this.#cached(e)
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
      if (!wanted.has(e) && !this.#cached(e)) wanted.add(e);
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
