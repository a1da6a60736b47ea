/**
 * One mounted eStargz layer, independent of FUSE: its tree, its read path, its state file,
 * prefetch and background fetch. The FUSE adapter (`_layer_fuse.ts`) serves it.
 */
import type { BlobReader, EstargzBlob } from "../estargz/mod.ts";
import { NO_PREFETCH_LANDMARK, openBlob, PREFETCH_LANDMARK } from "../estargz/mod.ts";
import type { Logger } from "../log/mod.ts";
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

/** What {@link Layer.open} needs. */
export interface LayerOptions {
  /** `sha256:…` of the compressed blob. */
  digest: string;
  /** The blob: ranges for the read path, plain reads for the footer and TOC. */
  source: RangeSource & BlobReader;
  /** Refuse the layer unless its TOC digest equals this. */
  expectedTocDigest?: string;
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

const BACKGROUND_RETRY_MS = 30_000;

/** A layer opened from its blob: tree, read path, state and background work. */
export class Layer {
  #error: string | undefined;
  readonly #abort = new AbortController();
  #prefetch: Promise<void> = Promise.resolve();
  #prefetchStarted = false;
  #background: Promise<void> = Promise.resolve();

  private constructor(
    readonly digest: string,
    readonly blob: EstargzBlob,
    readonly tree: LayerTree,
    readonly reader: LayerReader,
    readonly scheduler: BackgroundScheduler,
    readonly log: Logger,
    readonly backgroundRetryMs: number,
  ) {}

  /** Reads footer and TOC (checking the TOC digest when expected) and builds the tree. */
  static async open(opts: LayerOptions): Promise<Layer> {
    const blob = await openBlob(opts.source, { expectedTocDigest: opts.expectedTocDigest });
    const tree = new LayerTree(blob);
    const reader = new LayerReader(
      blob,
      opts.source,
      opts.cache,
      opts.digest,
      opts.minFetchBytes ?? 0,
    );
    return new Layer(
      opts.digest,
      blob,
      tree,
      reader,
      opts.scheduler,
      opts.log.with({ layer: opts.digest }),
      opts.backgroundRetryMs ?? BACKGROUND_RETRY_MS,
    );
  }

  /** Reads part of a regular file; marks the read as on-demand so background work yields. */
  async read(path: string, size: number, offset: number, length: number): Promise<Uint8Array> {
    const done = this.scheduler.beginOnDemand();
    try {
      return await this.reader.read(path, size, offset, length);
    } catch (err) {
      this.reportError(err);
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
    if (landmark) return landmark.entry?.offset ?? 0;
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

  /** Stops background work. */
  close(): void {
    this.#abort.abort();
  }
}
