/**
 * Compresses independent gzip members / zstd frames, in Web Workers when the runtime has them
 * (Bun and Deno do), so that a conversion uses every core. The worker is created from a Blob URL
 * holding its few lines of source: `bun build --compile` then needs no extra entrypoint.
 */
import * as os from "node:os";
import * as zlib from "node:zlib";

/** Which member format to produce. */
export type MemberKind = "gzip" | "zstd";

/** Compresses one member synchronously (used inline and, as source text, inside workers). */
export function compressMember(kind: MemberKind, level: number, data: Uint8Array): Uint8Array {
  return kind === "zstd"
    ? zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: level } })
    : zlib.gzipSync(data, { level });
}

// A message carries a batch of members: many small files would otherwise cost one round trip each.
const WORKER_SOURCE = `import * as zlib from "node:zlib";
self.onmessage = (ev) => {
  const { id, kind, level, items } = ev.data;
  try {
    const outs = items.map((data) => {
      const out = kind === "zstd"
        ? zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: level } })
        : zlib.gzipSync(data, { level });
      const copy = new Uint8Array(out.byteLength);
      copy.set(out);
      return copy;
    });
    self.postMessage({ id, outs }, outs.map((o) => o.buffer));
  } catch (err) {
    self.postMessage({ id, error: String(err) });
  }
};`;

interface WebWorker {
  postMessage(message: unknown, transfer?: ArrayBuffer[]): void;
  onmessage: ((ev: { data: WorkerReply }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  terminate(): void;
}
type WorkerConstructor = new (url: string, opts: { type: "module" }) => WebWorker;
interface WorkerReply {
  id: number;
  outs?: Uint8Array[];
  error?: string;
}
interface Job {
  data: Uint8Array;
  resolve(b: Uint8Array): void;
  reject(e: Error): void;
}

/** Members are sent to a worker in batches of about this many uncompressed bytes. */
const BATCH_BYTES = 256 * 1024;

/** A pool of compression workers; {@link close} it when done. */
export class CompressorPool {
  #workers: WebWorker[] = [];
  #busy: number[] = [];
  #waiting = new Map<number, { jobs: Job[]; w: number }>();
  #batch: Job[] = [];
  #batchBytes = 0;
  #nextId = 0;
  #url: string | undefined;

  constructor(readonly kind: MemberKind, readonly level: number, workers?: number) {
    const Ctor = (globalThis as unknown as { Worker?: WorkerConstructor }).Worker;
    const n = workers ?? Math.min(4, Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
    if (!Ctor || n <= 0) return;
    this.#url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    for (let i = 0; i < n; i++) {
      const w = new Ctor(this.#url, { type: "module" });
      const index = i;
      w.onmessage = (ev) => this.#reply(index, ev.data);
      w.onerror = (ev) => this.#fail(index, new Error(`compression worker failed: ${String(ev)}`));
      this.#workers.push(w);
      this.#busy.push(0);
    }
  }

  /** Number of workers (0 when compressing inline). */
  get size(): number {
    return this.#workers.length;
  }

  #reply(w: number, r: WorkerReply): void {
    const batch = this.#waiting.get(r.id);
    if (!batch) return;
    this.#waiting.delete(r.id);
    this.#busy[w]--;
    batch.jobs.forEach((job, i) => {
      const out = r.outs?.[i];
      if (out) job.resolve(out);
      else job.reject(new Error(r.error ?? "compression failed"));
    });
  }

  #fail(w: number, err: Error): void {
    for (const [id, batch] of this.#waiting) {
      if (batch.w === w) {
        this.#waiting.delete(id);
        for (const job of batch.jobs) job.reject(err);
      }
    }
  }

  /**
   * Compresses `data` into one member; `data` may be transferred (do not reuse it). Call
   * {@link flush} before waiting on a result, or it may sit in an unsent batch.
   */
  compress(data: Uint8Array): Promise<Uint8Array> {
    if (this.#workers.length === 0) {
      try {
        return Promise.resolve(compressMember(this.kind, this.level, data));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      this.#batch.push({ data, resolve, reject });
      this.#batchBytes += data.length;
      if (this.#batchBytes >= BATCH_BYTES) this.flush();
    });
  }

  /** Sends the pending batch to the least busy worker. */
  flush(): void {
    if (this.#batch.length === 0) return;
    const jobs = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    let w = 0;
    for (let i = 1; i < this.#busy.length; i++) if (this.#busy[i] < this.#busy[w]) w = i;
    const id = this.#nextId++;
    this.#busy[w]++;
    this.#waiting.set(id, { jobs, w });
    const items = jobs.map((j) =>
      j.data.byteOffset === 0 && j.data.byteLength === j.data.buffer.byteLength
        ? j.data
        : Uint8Array.prototype.slice.call(j.data)
    );
    this.#workers[w].postMessage(
      { id, kind: this.kind, level: this.level, items },
      items.map((i) => i.buffer as ArrayBuffer),
    );
  }

  /** Stops the workers; pending jobs are rejected. */
  close(): void {
    for (const w of this.#workers) w.terminate();
    const closed = new Error("compressor pool closed");
    for (const batch of this.#waiting.values()) for (const job of batch.jobs) job.reject(closed);
    for (const job of this.#batch) job.reject(closed);
    this.#waiting.clear();
    this.#batch = [];
    this.#workers = [];
    if (this.#url) URL.revokeObjectURL(this.#url);
  }
}
