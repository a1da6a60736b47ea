/**
 * One mounted eStargz layer, independent of FUSE: its tree, its read path, its state file,
 * prefetch and background fetch. The FUSE adapter (`_layer_fuse.ts`) serves it.
 */
import { setImmediate } from "node:timers";
import type { BlobReader, EstargzBlob } from "../estargz/mod.ts";
import { NO_PREFETCH_LANDMARK, openBlob, PREFETCH_LANDMARK } from "../estargz/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Digest } from "../registry/mod.ts";
import type { BackgroundScheduler } from "./_background.ts";
import type { ChunkCache } from "./_chunk_cache.ts";
import { LayerReader } from "./_layer_reader.ts";
import type { RangeSource } from "./_layer_reader.ts";
import { LayerTree } from "./_tree.ts";

/** The state file's JSON, as the Go snapshotter writes it. */
export interface LayerState {
  error?: string;
  digest: string;
  size: number;
  fetchedSize: number;
  fetchedPercent: number;
}

/** What happened between the mount and the container's first read, for the admin view. */
export interface LayerStartup {
  /** Compressed bytes of the blob that were local when the first read came (undefined before). */
  fetchedBeforeFirstRead?: number;
  /** The learned prefetch profile replayed at mount, if there was one. */
  profile?: {
    /** Files the profile names. */
    files: number;
    /** Of those, regular files this layer holds (the others are skipped). */
    found: number;
    /** Compressed bytes fetched for them (so far). */
    bytes: number;
    done: boolean;
  };
  /** True while this mount records a profile. */
  recording: boolean;
}

/** Reads being recorded into a profile (see {@link Layer.recordReads}). */
interface Recording {
  readonly files: Set<string>;
  readonly windowMs: number;
  readonly maxFiles: number;
  readonly onDone: (files: string[]) => void;
  timer?: ReturnType<typeof setTimeout>;
}

/** What {@link Layer.open} needs. */
export interface LayerOptions {
  /** `sha256:…` of the compressed blob; names the state file, so only a parsed Digest. */
  digest: Digest;
  /** The blob: ranges for the read path, plain reads for the footer and TOC. */
  source: RangeSource & BlobReader;
  /** Refuse the layer unless its TOC digest equals this. */
  expectedTocDigest?: string;
  /** The blob's last bytes when locating it already fetched them (footer and TOC are there). */
  tail?: Uint8Array;
  cache: ChunkCache;
  scheduler: BackgroundScheduler;
  log: Logger;
  /** Smallest range a miss fetches (`[blob] chunk_size`); 0 fetches only what is read. */
  minFetchBytes?: number;
  /** Pause before a failed background fetch step is tried again (default 30 s). */
  backgroundRetryMs?: number;
}

/**
 * Background fetch asks for the blob in pieces of this size: small enough that an on-demand read
 * arriving meanwhile waits for little, large enough to keep requests few.
 */
const BACKGROUND_WINDOW = 1 << 20;

/** Resolves after the event loop has run what is waiting (I/O callbacks included). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

const BACKGROUND_RETRY_MS = 30_000;

/** A layer opened from its blob: tree, read path, state and background work. */
export class Layer {
  #error: string | undefined;
  readonly #abort = new AbortController();
  #prefetch: Promise<void> = Promise.resolve();
  #prefetchStarted = false;
  #background: Promise<void> = Promise.resolve();
  #recording: Recording | undefined;
  #fetchedAtFirstRead: number | undefined;
  #profile: LayerStartup["profile"];

  private constructor(
    readonly digest: Digest,
    readonly blob: EstargzBlob,
    readonly tree: LayerTree,
    readonly reader: LayerReader,
    readonly scheduler: BackgroundScheduler,
    readonly log: Logger,
    readonly backgroundRetryMs: number,
  ) {}

  /** Reads footer and TOC (checking the TOC digest when expected) and builds the tree. */
  static async open(opts: LayerOptions): Promise<Layer> {
    const blob = await openBlob(opts.source, {
      expectedTocDigest: opts.expectedTocDigest,
      tail: opts.tail,
    });
    // Each step over a large index takes a while: let other mounts' requests in between.
    await yieldToEventLoop();
    const tree = await LayerTree.build(blob);
    await yieldToEventLoop();
    const log = opts.log.with({ layer: opts.digest });
    const reader = new LayerReader(
      blob,
      opts.source,
      opts.cache,
      opts.digest,
      opts.minFetchBytes ?? 0,
      log,
    );
    return new Layer(
      opts.digest,
      blob,
      tree,
      reader,
      opts.scheduler,
      log,
      opts.backgroundRetryMs ?? BACKGROUND_RETRY_MS,
    );
  }

  /** Reads part of a regular file; marks the read as on-demand so background work yields. */
  async read(path: string, size: number, offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(Math.max(0, Math.min(size, offset + length) - offset));
    await this.readInto(path, size, offset, out);
    return out;
  }

  /**
   * Reads part of a regular file into `dest` (a FUSE reply buffer) and returns the byte count;
   * `signal` (FUSE_INTERRUPT) cancels fetches not yet sent.
   */
  async readInto(
    path: string,
    size: number,
    offset: number,
    dest: Uint8Array,
    signal?: AbortSignal,
  ): Promise<number> {
    this.#fetchedAtFirstRead ??= this.reader.fetched.totalSize;
    if (this.#recording) this.#record(this.#recording, path);
    const done = this.scheduler.beginOnDemand();
    try {
      return await this.reader.readInto(path, size, offset, dest, signal);
    } catch (err) {
      if (!signal?.aborted) this.reportError(err);
      throw err;
    } finally {
      done();
    }
  }

  /** Records an error for the state file (the latest one is shown) and logs it. */
  reportError(err: unknown): void {
    this.#error = (err as Error)?.message ?? String(err);
    this.log.error("layer error", { error: this.#error });
  }

  /** The state file's content, regenerated on every call. */
  state(): LayerState {
    const size = this.reader.source.size;
    const fetchedSize = this.reader.fetched.totalSize;
    const s: LayerState = {
      digest: this.digest,
      size,
      fetchedSize,
      fetchedPercent: size === 0 ? 100 : (fetchedSize / size) * 100,
    };
    return this.#error === undefined ? s : { error: this.#error, ...s };
  }

  /** The state file's bytes: the JSON plus a newline. */
  stateBytes(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify(this.state()) + "\n");
  }

  /**
   * How many leading blob bytes to prefetch: none with `.no.prefetch.landmark`, everything
   * before `.prefetch.landmark`, else `defaultSize` (bounded by the data region).
   */
  prefetchSize(defaultSize: number): number {
    if (this.blob.entry(NO_PREFETCH_LANDMARK)) return 0;
    const landmark = this.blob.entry(PREFETCH_LANDMARK);
    if (landmark) return landmark.offset;
    return Math.min(Math.max(0, defaultSize), this.reader.dataSize);
  }

  /**
   * Starts prefetching the first `size` bytes of the blob into the cache, in requests of at most
   * `maxRequest` bytes (0: up to 16 MiB each).
   */
  startPrefetch(size: number, maxRequest = 0): Promise<void> {
    // A neighbour's prefetch may have started before its own mount asks again.
    if (size <= 0 || this.#prefetchStarted) return this.#prefetch;
    this.#prefetchStarted = true;
    this.#prefetch = (async () => {
      const t0 = Date.now();
      const bytes = await this.reader.fetchBlobRange(
        0,
        size,
        maxRequest > 0 ? maxRequest : 16 << 20,
      );
      this.log.debug("prefetched", { bytes, ms: Date.now() - t0 });
    })().catch((err) => this.reportError(err));
    return this.#prefetch;
  }

  /** Resolves when prefetch is over, or after `timeoutMs` (prefetch then continues). */
  async waitPrefetch(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    try {
      return await Promise.race([this.#prefetch.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * After prefetch, fetches the rest of the layer through the daemon's background scheduler
   * (which yields to on-demand reads), until the whole blob is local.
   */
  startBackgroundFetch(): Promise<void> {
    const signal = this.#abort.signal;
    this.scheduler.touch();
    this.#background = (async () => {
      await this.#prefetch;
      const t0 = Date.now();
      for (const [start, end] of this.reader.unfetched()) {
        for (let s = start; s < end; s += BACKGROUND_WINDOW) {
          const e = Math.min(end, s + BACKGROUND_WINDOW);
          await this.#retrying(
            () =>
              this.scheduler.run(() => this.reader.fetchBlobRange(s, e, BACKGROUND_WINDOW), signal),
            signal,
          );
        }
      }
      // Bytes that belong to no payload (the tar headers before the first one) complete the blob.
      const gaps = this.reader.unfetched();
      if (gaps.length > 0) {
        await this.#retrying(() =>
          this.scheduler.run(async () => {
            await this.reader.source.readRanges(gaps);
            for (const [s, e] of gaps) this.reader.fetched.add(s, e);
          }, signal), signal);
      }
      this.log.debug("background fetch complete", { ms: Date.now() - t0 });
    })().catch((err) => {
      if (!signal.aborted) this.reportError(err);
    });
    return this.#background;
  }

  /**
   * Records the regular files read, in the order first read, from the first read on for
   * `windowMs` or until `maxFiles` are seen; `onDone` then gets them (also when the layer is
   * closed earlier: a short-lived container's reads are still its start-up reads).
   */
  recordReads(windowMs: number, maxFiles: number, onDone: (files: string[]) => void): void {
    if (this.#recording || maxFiles <= 0) return;
    this.#recording = { files: new Set(), windowMs, maxFiles, onDone };
  }

  #record(r: Recording, path: string): void {
    if (r.files.has(path)) return;
    r.files.add(path);
    r.timer ??= setTimeout(() => this.#stopRecording(), r.windowMs);
    if (r.files.size >= r.maxFiles) this.#stopRecording();
  }

  #stopRecording(): void {
    const r = this.#recording;
    if (!r) return;
    this.#recording = undefined;
    clearTimeout(r.timer);
    r.onDone([...r.files]);
  }

  /**
   * Prefetches the files of a learned profile in one batch. Names the layer does not hold (a
   * stale or foreign profile) are skipped; what is fetched is verified like any read.
   */
  replayProfile(files: readonly string[]): Promise<void> {
    if (this.#profile) return Promise.resolve();
    const chunks = [];
    let found = 0;
    for (const f of files) {
      const node = this.blob.entry(f);
      if (node?.type !== "reg") continue;
      found++;
      chunks.push(...this.blob.chunks(node));
    }
    const profile = { files: files.length, found, bytes: 0, done: false };
    this.#profile = profile;
    const t0 = Date.now();
    return this.reader.fetchChunks(chunks).then((bytes) => {
      profile.bytes = bytes;
      this.log.debug("profile prefetched", { files: found, bytes, ms: Date.now() - t0 });
    }, (err) => this.reportError(err)).finally(() => (profile.done = true));
  }

  /** The mount's start-up: bytes local at the first read, the profile replayed or recorded. */
  startup(): LayerStartup {
    return {
      ...(this.#fetchedAtFirstRead === undefined
        ? {}
        : { fetchedBeforeFirstRead: this.#fetchedAtFirstRead }),
      ...(this.#profile ? { profile: { ...this.#profile } } : {}),
      recording: this.#recording !== undefined,
    };
  }

  /**
   * Runs a background step until it succeeds, pausing after each failure: an outage longer
   * than `fetching_timeout_sec` fails the step, and must not end background fetch for good.
   */
  async #retrying<T>(step: () => Promise<T>, signal: AbortSignal): Promise<T> {
    for (;;) {
      try {
        return await step();
      } catch (err) {
        if (signal.aborted) throw err;
        this.log.warn("background fetch failed; trying again later", {
          error: (err as Error)?.message ?? String(err),
          retryMs: this.backgroundRetryMs,
        });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, this.backgroundRetryMs);
          function done() {
            clearTimeout(timer);
            signal.removeEventListener("abort", done);
            resolve();
          }
          signal.addEventListener("abort", done, { once: true });
        });
        signal.throwIfAborted();
      }
    }
  }

  /** True when every byte of the blob has been fetched. */
  get complete(): boolean {
    return this.reader.fetched.totalSize >= this.reader.source.size;
  }

  /** Stops background work (and a recording, which hands over what it has). */
  close(): void {
    this.#stopRecording();
    this.#abort.abort();
  }
}
