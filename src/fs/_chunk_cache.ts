/**
 * The chunk cache: verified, decompressed chunks keyed by their digest, so identical chunks of
 * different layers are stored once. A memory LRU of hot chunks sits over a disk cache under the
 * daemon root; unlike upstream, whose cache only grows, the disk part is bounded and evicts the
 * least recently used chunks (an evicted chunk is simply fetched again).
 *
 * The disk is a cache, never a reason to fail a read: a chunk that cannot be written stays in
 * memory, and when the disk is full the disk part stops growing at what it holds then (new
 * chunks replace the least recently used ones) until the daemon restarts.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { Logger } from "../log/mod.ts";

/** Byte-bounded least-recently-used map of chunks held in memory. */
export class MemoryLru {
  readonly #entries = new Map<string, Uint8Array>();
  #bytes = 0;

  constructor(readonly maxBytes: number) {}

  /** The chunk for `key`, marking it most recently used. */
  get(key: string): Uint8Array | undefined {
    const v = this.#entries.get(key);
    if (v === undefined) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, v);
    return v;
  }

  /** True when `key` is held (without marking it used). */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Stores a chunk; chunks larger than a quarter of the bound are not kept in memory. */
  set(key: string, value: Uint8Array): void {
    if (value.length > this.maxBytes / 4) return;
    const old = this.#entries.get(key);
    if (old) {
      this.#bytes -= old.length;
      this.#entries.delete(key);
    }
    this.#entries.set(key, value);
    this.#bytes += value.length;
    for (const [k, v] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= v.length;
    }
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }
}

/** Counters for the admin view and benchmarks. */
export interface ChunkCacheStats {
  memoryHits: number;
  diskHits: number;
  misses: number;
  evictions: number;
  diskBytes: number;
  diskChunks: number;
  memoryBytes: number;
  /** Chunks that could not be written to disk (served from memory instead). */
  diskErrors: number;
  /** The disk bound in effect: `max_size`, or lower once the disk ran full; 0 = unbounded. */
  diskBoundBytes: number;
  /** The last disk write failure, if any. */
  diskError?: string;
}

/** Sizes of the two cache levels; `maxDiskBytes` 0 means unbounded (upstream behaviour). */
export interface ChunkCacheOptions {
  maxDiskBytes: number;
  maxMemoryBytes: number;
}

const KEY_RE = /^[0-9a-f]{64}$/;

/** Turns `sha256:<hex>` (or bare hex) into the cache key; throws on anything else. */
export function chunkKey(digest: string): string {
  const hex = digest.startsWith("sha256:") ? digest.slice(7) : digest;
  if (!KEY_RE.test(hex)) throw new Error(`invalid chunk digest ${JSON.stringify(digest)}`);
  return hex;
}

/** Memory LRU over a bounded on-disk store of chunks. */
export class ChunkCache {
  readonly #memory: MemoryLru;
  /** Disk entries in least-recently-used-first order, with their sizes. */
  readonly #disk = new Map<string, number>();
  /** Chunks whose disk write is under way: served from here until the file is in place. */
  readonly #writing = new Map<string, Uint8Array>();
  #diskBytes = 0;
  readonly #stats = { memoryHits: 0, diskHits: 0, misses: 0, evictions: 0, diskErrors: 0 };
  #diskError: string | undefined;
  /** What the disk held when it ran out of space: the disk part's bound from then on. */
  #fullBound: number | undefined;

  private constructor(
    readonly dir: string,
    readonly options: ChunkCacheOptions,
    readonly log?: Logger,
  ) {
    this.#memory = new MemoryLru(options.maxMemoryBytes);
  }

  /**
   * Opens (creating) the cache in `dir`. Chunks left by an earlier run are kept and ordered by
   * their modification time; half-written files from a crash are removed.
   */
  static async open(dir: string, options: ChunkCacheOptions, log?: Logger): Promise<ChunkCache> {
    const cache = new ChunkCache(dir, options, log);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const found: { key: string; size: number; mtime: number }[] = [];
    for (const shard of await fs.readdir(dir)) {
      const shardDir = path.join(dir, shard);
      let names: string[];
      try {
        names = await fs.readdir(shardDir);
      } catch {
        continue;
      }
      for (const name of names) {
        const p = path.join(shardDir, name);
        if (!KEY_RE.test(name)) {
          await fs.rm(p, { force: true });
          continue;
        }
        const st = await fs.stat(p);
        found.push({ key: name, size: st.size, mtime: st.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      cache.#disk.set(f.key, f.size);
      cache.#diskBytes += f.size;
    }
    await cache.#evict();
    return cache;
  }

  #file(key: string): string {
    return path.join(this.dir, key.slice(0, 2), key);
  }

  /** True when the chunk is cached (in memory or on disk); does not count as a use. */
  has(key: string): boolean {
    return this.#disk.has(key) || this.#memory.has(key) || this.#writing.has(key);
  }

  /**
   * The chunk when it is held in memory, else undefined (it may still be on disk): a hit costs
   * no trip through the event loop.
   */
  peek(key: string): Uint8Array | undefined {
    const hot = this.#memory.get(key);
    if (hot) {
      this.#stats.memoryHits++;
      this.#touch(key);
      return hot;
    }
    const writing = this.#writing.get(key);
    if (writing) this.#stats.memoryHits++;
    return writing;
  }

  /** The cached chunk, or undefined. Bytes were verified before they were stored. */
  async get(key: string): Promise<Uint8Array | undefined> {
    const held = this.peek(key);
    if (held) return held;
    if (!this.#disk.has(key)) {
      this.#stats.misses++;
      return undefined;
    }
    try {
      const data = new Uint8Array(await fs.readFile(this.#file(key)));
      if (data.length !== this.#disk.get(key)) throw new Error("size changed");
      this.#stats.diskHits++;
      this.#touch(key);
      this.#memory.set(key, data);
      return data;
    } catch {
      // Evicted meanwhile, or damaged by someone else: treat as a miss and forget it.
      this.#forget(key);
      this.#stats.misses++;
      return undefined;
    }
  }

  /**
   * Stores a verified chunk: served from memory at once (so that callers need not wait for the
   * disk), on disk (atomically: temp file + rename) when the promise resolves. Never fails for
   * the disk's sake: see the module doc.
   */
  async put(key: string, data: Uint8Array): Promise<void> {
    this.#memory.set(key, data);
    if (this.#disk.has(key)) {
      this.#touch(key);
      return;
    }
    if (this.#writing.has(key)) return;
    this.#writing.set(key, data);
    try {
      await this.#write(key, data);
    } finally {
      this.#writing.delete(key);
    }
  }

  async #write(key: string, data: Uint8Array): Promise<void> {
    const bound = this.#bound();
    if (data.length > bound) return;
    // Room first, counting this chunk before it is written: reads are answered before their
    // chunks reach the disk, so several writes run at once, and together they must not pass the
    // bound either (on a full disk, the write only succeeds where an evicted chunk was).
    this.#diskBytes += data.length;
    await this.#evict();
    if (this.#diskBytes > this.#bound()) {
      // Writes under way already fill the bound: this chunk stays in memory only.
      this.#diskBytes -= data.length;
      return;
    }
    const file = this.#file(key);
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    try {
      await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await fs.writeFile(tmp, data);
      await fs.rename(tmp, file);
    } catch (err) {
      this.#diskBytes -= data.length;
      await fs.rm(tmp, { force: true }).catch(() => {});
      this.#diskFailed(err);
      return;
    }
    this.#disk.set(key, data.length);
  }

  #diskFailed(err: unknown): void {
    const code = (err as NodeJS.ErrnoException).code;
    const message = (err as Error)?.message ?? String(err);
    this.#stats.diskErrors++;
    const full = code === "ENOSPC" || code === "EDQUOT";
    const firstFull = full && this.#fullBound === undefined;
    if (full) this.#fullBound = Math.min(this.#fullBound ?? Infinity, this.#diskBytes);
    // One line per kind of failure, not one per chunk.
    if (firstFull || (!full && message !== this.#diskError)) {
      this.log?.warn("chunk cache: cannot write to disk; serving from memory", {
        dir: this.dir,
        error: message,
        ...(full ? { diskBoundBytes: this.#fullBound } : {}),
      });
    }
    this.#diskError = message;
  }

  #touch(key: string): void {
    const size = this.#disk.get(key);
    if (size === undefined) return;
    this.#disk.delete(key);
    this.#disk.set(key, size);
  }

  #forget(key: string): void {
    const size = this.#disk.get(key);
    if (size === undefined) return;
    this.#disk.delete(key);
    this.#diskBytes -= size;
  }

  /** The disk bound in effect (Infinity: none). */
  #bound(): number {
    const max = this.options.maxDiskBytes > 0 ? this.options.maxDiskBytes : Infinity;
    return Math.min(max, this.#fullBound ?? Infinity);
  }

  /** Removes least recently used chunks until the bound is respected. */
  async #evict(): Promise<void> {
    const bound = this.#bound();
    if (bound === Infinity) return;
    for (const key of this.#disk.keys()) {
      if (this.#diskBytes <= bound) break;
      this.#forget(key);
      this.#stats.evictions++;
      await fs.rm(this.#file(key), { force: true });
    }
  }

  /** Current counters. */
  stats(): ChunkCacheStats {
    return {
      ...this.#stats,
      diskBytes: this.#diskBytes,
      diskChunks: this.#disk.size,
      memoryBytes: this.#memory.bytes,
      diskBoundBytes: this.#bound() === Infinity ? 0 : this.#bound(),
      ...(this.#diskError === undefined ? {} : { diskError: this.#diskError }),
    };
  }
}
