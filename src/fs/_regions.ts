/**
 * A set of byte ranges of a blob, kept merged and sorted: which parts of a layer have been
 * fetched (for the state file's `fetchedSize`) and which are still missing (for background fetch).
 */

/** A half-open byte range `[start, end)`. */
export type Range = readonly [start: number, end: number];

/** Sorted, merged, non-overlapping ranges. */
export class RegionSet {
  #ranges: [number, number][] = [];
  #total = 0;

  /** Adds `[start, end)`, merging it with overlapping or touching ranges. */
  add(start: number, end: number): void {
    if (end <= start) return;
    const rs = this.#ranges;
    // First range whose end reaches `start` (touching ranges merge too).
    let lo = 0;
    let hi = rs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (rs[mid][1] < start) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    let s = start;
    let e = end;
    while (i < rs.length && rs[i][0] <= e) {
      s = Math.min(s, rs[i][0]);
      e = Math.max(e, rs[i][1]);
      this.#total -= rs[i][1] - rs[i][0];
      i++;
    }
    rs.splice(lo, i - lo, [s, e]);
    this.#total += e - s;
  }

  /** True when all of `[start, end)` is in the set. */
  covers(start: number, end: number): boolean {
    if (end <= start) return true;
    let lo = 0;
    let hi = this.#ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#ranges[mid][1] <= start) lo = mid + 1;
      else hi = mid;
    }
    const r = this.#ranges[lo];
    return r !== undefined && r[0] <= start && r[1] >= end;
  }

  /** The parts of `[start, end)` that are not in the set, in order. */
  missing(start: number, end: number): Range[] {
    const out: Range[] = [];
    let pos = start;
    for (const [s, e] of this.#ranges) {
      if (e <= pos) continue;
      if (s >= end) break;
      if (s > pos) out.push([pos, Math.min(s, end)]);
      pos = Math.max(pos, e);
      if (pos >= end) break;
    }
    if (pos < end) out.push([pos, end]);
    return out;
  }

  /** Total bytes covered. */
  get totalSize(): number {
    return this.#total;
  }

  /** The ranges, for inspection. */
  ranges(): readonly Range[] {
    return this.#ranges;
  }
}
