/**
 * Shares one in-flight operation among concurrent callers asking for the same key, so that
 * concurrent reads of one chunk cause one registry fetch.
 */
export class Flights<K, V> {
  readonly #running = new Map<K, Promise<V>>();

  /** Runs `fn` unless a run for `key` is already in flight, whose result is shared instead. */
  run(key: K, fn: () => Promise<V>): Promise<V> {
    const existing = this.#running.get(key);
    if (existing) return existing;
    const p = fn().finally(() => this.#running.delete(key));
    this.#running.set(key, p);
    return p;
  }

  /** Number of operations in flight. */
  get size(): number {
    return this.#running.size;
  }
}
