/**
 * Daemon-wide scheduling of background work (prefetch of other layers, fetching the rest of
 * each layer): at most `maxConcurrency` jobs at once, and none while on-demand reads are active
 * or were active within the silence period, so that a running container's reads come first.
 */

/** Runs background jobs only when on-demand reads are quiet. */
export class BackgroundScheduler {
  #onDemand = 0;
  /** A new mount counts as activity: its container is about to start reading. */
  #lastOnDemand = Date.now();
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly maxConcurrency: number, readonly silenceMs: number) {}

  /** Marks an on-demand read as running; call the returned function when it ends. */
  beginOnDemand(): () => void {
    this.#onDemand++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#onDemand--;
      this.#lastOnDemand = Date.now();
    };
  }

  /**
   * Restarts the silence period without a read: called when a layer is mounted, so that
   * background fetch does not compete with the first reads of the container that needs it.
   */
  touch(): void {
    this.#lastOnDemand = Math.max(this.#lastOnDemand, Date.now());
  }

  /** Milliseconds until background work may run (0 when it may run now). */
  quietIn(): number {
    if (this.#onDemand > 0) return this.silenceMs;
    return Math.max(0, this.#lastOnDemand + this.silenceMs - Date.now());
  }

  /** Runs `job` once a slot is free and on-demand reads have been quiet for the silence period. */
  async run<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    while (this.#running >= this.maxConcurrency) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    this.#running++;
    try {
      for (let wait = this.quietIn(); wait > 0; wait = this.quietIn()) {
        signal?.throwIfAborted();
        await new Promise((r) => setTimeout(r, Math.min(wait, 250)));
      }
      signal?.throwIfAborted();
      return await job();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }

  /** Jobs running now. */
  get running(): number {
    return this.#running;
  }
}
