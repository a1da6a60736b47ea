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

const WORKER_SOURCE = `import * as zlib from "node:zlib";
self.onmessage = (ev) => {
  const { id, kind, level, data } = ev.data;
  try {
    const out = kind === "zstd"
      ? zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: level } })
      : zlib.gzipSync(data, { level });
    const copy = new Uint8Array(out.byteLength);
    copy.set(out);
    self.postMessage({ id, out: copy }, [copy.buffer]);
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
  out?: Uint8Array;
  error?: string;
}

/** Below this size a member is compressed inline: a worker round trip would cost more. */
const INLINE_LIMIT = 16 * 1024;

/** A pool of compression workers; {@link close} it when done. */
export class CompressorPool {
  #workers: WebWorker[] = [];
  #busy: number[] = [];
  #waiting = new Map<number, { resolve(b: Uint8Array): void; reject(e: Error): void; w: number }>();
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
    const job = this.#waiting.get(r.id);
    if (!job) return;
    this.#waiting.delete(r.id);
    this.#busy[w]--;
    if (r.out) job.resolve(r.out);
    else job.reject(new Error(r.error ?? "compression failed"));
  }

  #fail(w: number, err: Error): void {
    for (const [id, job] of this.#waiting) {
      if (job.w === w) {
        this.#waiting.delete(id);
        job.reject(err);
      }
    }
  }

  /** Compresses `data` into one member; `data` may be transferred (do not reuse it). */
  compress(data: Uint8Array): Promise<Uint8Array> {
    if (this.#workers.length === 0 || data.length < INLINE_LIMIT) {
      try {
        return Promise.resolve(compressMember(this.kind, this.level, data));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    let w = 0;
    for (let i = 1; i < this.#busy.length; i++) if (this.#busy[i] < this.#busy[w]) w = i;
    const id = this.#nextId++;
    this.#busy[w]++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject, w });
      const owned = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength
        ? data
        : Uint8Array.prototype.slice.call(data);
      this.#workers[w].postMessage(
        { id, kind: this.kind, level: this.level, data: owned },
        [owned.buffer as ArrayBuffer],
      );
    });
  }

  /** Stops the workers; pending jobs are rejected. */
  close(): void {
    for (const w of this.#workers) w.terminate();
    for (const job of this.#waiting.values()) job.reject(new Error("compressor pool closed"));
    this.#waiting.clear();
    this.#workers = [];
    if (this.#url) URL.revokeObjectURL(this.#url);
  }
}
