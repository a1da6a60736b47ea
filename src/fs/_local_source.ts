import type { BlobReader } from "../estargz/mod.ts";
import type { RangeSource } from "./_layer_reader.ts";
import type { Range } from "./_regions.ts";

/**
 * A {@link RangeSource} over any {@link BlobReader} (a local blob file for `stargz mount FILE`),
 * reading each range separately.
 */
export function rangeSourceOf(reader: BlobReader): RangeSource {
  return {
    size: reader.size,
    readRanges(ranges: readonly Range[]): Promise<Uint8Array[]> {
      return Promise.all(ranges.map(([s, e]) => reader.read(s, e - s)));
    },
  };
}
