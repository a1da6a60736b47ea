/**
 * Footer codecs. Every eStargz flavour ends with a fixed-size footer that says where the TOC is:
 *
 * - gzip eStargz, 51 bytes: an empty gzip member whose header extra field holds the subfield
 *   `SG` (len 22) = `%016x` TOC offset + `STARGZ`.
 * - legacy stargz, 47 bytes: the same but the extra field is the 22 bytes without a subfield header.
 * - zstd:chunked, 40 bytes (the payload of a zstd skippable frame):
 *   `[0:8]` TOC offset, `[8:16]` compressed TOC length, `[16:24]` uncompressed TOC length,
 *   `[24:32]` manifest type (1), `[32:40]` `GnUlInUx`; all little-endian u64.
 * - external TOC, 46 bytes: subfield `SG` = `STARGZEXTERNALTOC`; the TOC lives elsewhere and we
 *   report that instead of misreading the blob.
 */
import { FooterError } from "./errors.ts";

/** Size of the gzip eStargz footer. */
export const GZIP_FOOTER_SIZE = 51;
/** Size of the legacy stargz footer. */
export const LEGACY_FOOTER_SIZE = 47;
/** Size of the zstd:chunked footer (skippable-frame payload). */
export const ZSTD_FOOTER_SIZE = 40;
/** Size of the external-TOC gzip footer. */
export const EXTERNAL_TOC_FOOTER_SIZE = 46;
/** The largest footer, i.e. how much of the tail is always worth fetching. */
export const MAX_FOOTER_SIZE = GZIP_FOOTER_SIZE;

/** Magic that starts a zstd skippable frame (the variant estargz uses). */
export const ZSTD_SKIPPABLE_MAGIC = new Uint8Array([0x50, 0x2a, 0x4d, 0x18]);
const ZSTD_CHUNKED_MAGIC = new TextEncoder().encode("GnUlInUx");
const STARGZ = "STARGZ";
const EXTERNAL = "STARGZEXTERNALTOC";

/** Which flavour a blob is. */
export type BlobFormat = "gzip" | "legacy-gzip" | "zstd";

/** What a footer says. */
export interface Footer {
  format: BlobFormat;
  footerSize: number;
  /** Offset of the TOC as written in the footer (zstd: first byte of the compressed TOC). */
  tocOffset: number;
  /** Where the data region ends (gzip: `tocOffset`; zstd: start of the TOC's skippable frame). */
  dataEnd: number;
  /** Compressed TOC length when the footer says it (zstd), else undefined. */
  tocCompressedSize?: number;
  /** Uncompressed TOC length when the footer says it (zstd). */
  tocUncompressedSize?: number;
}

const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);

function gzipFooterBytes(extra: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + extra.length + 5 + 8);
  // ID1 ID2 CM=deflate FLG=FEXTRA MTIME=0 XFL=0 OS=255, as Go's gzip writer emits.
  out.set([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff], 0);
  out[10] = extra.length & 0xff;
  out[11] = extra.length >> 8;
  out.set(extra, 12);
  // One final stored block of length 0 (what deflate level 0 writes for empty input),
  // then CRC32 = 0 and ISIZE = 0.
  out.set([0x01, 0x00, 0x00, 0xff, 0xff], 12 + extra.length);
  return out;
}

function hexOffset(off: number): string {
  return off.toString(16).padStart(16, "0");
}

/** The 51-byte gzip eStargz footer for a TOC at `tocOffset`. */
export function encodeGzipFooter(tocOffset: number): Uint8Array {
  const sub = new TextEncoder().encode(hexOffset(tocOffset) + STARGZ);
  const extra = new Uint8Array(4 + sub.length);
  extra.set([0x53, 0x47, sub.length, 0], 0);
  extra.set(sub, 4);
  return gzipFooterBytes(extra);
}

/** The 47-byte legacy stargz footer for a TOC at `tocOffset`. */
export function encodeLegacyFooter(tocOffset: number): Uint8Array {
  return gzipFooterBytes(new TextEncoder().encode(hexOffset(tocOffset) + STARGZ));
}

/** The zstd:chunked footer as a complete skippable frame (8-byte frame header + 40 bytes). */
export function encodeZstdFooterFrame(
  tocOffset: number,
  compressedLen: number,
  uncompressedLen: number,
): Uint8Array {
  const out = new Uint8Array(8 + ZSTD_FOOTER_SIZE);
  const dv = new DataView(out.buffer);
  out.set(ZSTD_SKIPPABLE_MAGIC, 0);
  dv.setUint32(4, ZSTD_FOOTER_SIZE, true);
  dv.setBigUint64(8, BigInt(tocOffset), true);
  dv.setBigUint64(16, BigInt(compressedLen), true);
  dv.setBigUint64(24, BigInt(uncompressedLen), true);
  dv.setBigUint64(32, 1n, true);
  out.set(ZSTD_CHUNKED_MAGIC, 40);
  return out;
}

/**
 * Parses a footer-sized empty gzip member with FEXTRA and returns the extra field, or undefined.
 * An empty member always ends in CRC32 = 0 and ISIZE = 0.
 */
function gzipExtra(p: Uint8Array): Uint8Array | undefined {
  if (p.length < 20 || p[0] !== 0x1f || p[1] !== 0x8b || p[2] !== 0x08) return undefined;
  for (let i = p.length - 8; i < p.length; i++) if (p[i] !== 0) return undefined;
  if ((p[3] & 0x04) === 0) return undefined;
  const xlen = p[10] | (p[11] << 8);
  if (12 + xlen > p.length) return undefined;
  return p.subarray(12, 12 + xlen);
}

function parseHexOffset(s: string): number | undefined {
  if (!/^[0-9a-fA-F]{16}$/.test(s)) return undefined;
  const n = parseInt(s, 16);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Finds and parses the footer at the end of `tail`, the last bytes of a blob of `blobSize`
 * bytes. Throws {@link FooterError} (code `external-toc` for external-TOC blobs).
 */
export function parseFooter(tail: Uint8Array, blobSize: number): Footer {
  const end = tail.length;
  if (end >= ZSTD_FOOTER_SIZE) {
    const p = tail.subarray(end - ZSTD_FOOTER_SIZE);
    if (p.subarray(32, 40).every((b, i) => b === ZSTD_CHUNKED_MAGIC[i])) {
      const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
      const tocOffset = Number(dv.getBigUint64(0, true));
      const compressed = Number(dv.getBigUint64(8, true));
      const uncompressed = Number(dv.getBigUint64(16, true));
      const manifestType = Number(dv.getBigUint64(24, true));
      if (manifestType !== 1) {
        throw new FooterError(`zstd:chunked footer has manifest type ${manifestType}, want 1`);
      }
      if (tocOffset < 8 || tocOffset + compressed > blobSize - ZSTD_FOOTER_SIZE) {
        throw new FooterError(
          `zstd:chunked footer TOC range ${tocOffset}+${compressed} is outside the blob of ${blobSize} bytes`,
        );
      }
      return {
        format: "zstd",
        footerSize: ZSTD_FOOTER_SIZE,
        tocOffset,
        dataEnd: tocOffset - 8,
        tocCompressedSize: compressed,
        tocUncompressedSize: uncompressed,
      };
    }
  }
  if (end >= EXTERNAL_TOC_FOOTER_SIZE) {
    const extra = gzipExtra(tail.subarray(end - EXTERNAL_TOC_FOOTER_SIZE));
    if (extra && latin1(extra).includes(EXTERNAL)) {
      throw new FooterError(
        "blob uses an external TOC (footer STARGZEXTERNALTOC); the TOC must be fetched separately",
        "external-toc",
      );
    }
  }
  const errors: string[] = [];
  if (end >= GZIP_FOOTER_SIZE) {
    const extra = gzipExtra(tail.subarray(end - GZIP_FOOTER_SIZE));
    if (!extra || extra.length !== 26) errors.push("no gzip header with a 26-byte extra field");
    else if (extra[0] !== 0x53 || extra[1] !== 0x47) errors.push("subfield ID is not SG");
    else if ((extra[2] | (extra[3] << 8)) !== 22) errors.push("subfield length is not 22");
    else if (latin1(extra.subarray(20)) !== STARGZ) errors.push("STARGZ magic missing");
    else {
      const off = parseHexOffset(latin1(extra.subarray(4, 20)));
      if (off === undefined) errors.push("TOC offset is not 16 hex digits");
      else if (off > blobSize - GZIP_FOOTER_SIZE) errors.push(`TOC offset ${off} past the end`);
      else return { format: "gzip", footerSize: GZIP_FOOTER_SIZE, tocOffset: off, dataEnd: off };
    }
  }
  if (end >= LEGACY_FOOTER_SIZE) {
    const extra = gzipExtra(tail.subarray(end - LEGACY_FOOTER_SIZE));
    if (extra && extra.length === 22 && latin1(extra.subarray(16)) === STARGZ) {
      const off = parseHexOffset(latin1(extra.subarray(0, 16)));
      if (off !== undefined && off <= blobSize - LEGACY_FOOTER_SIZE) {
        return {
          format: "legacy-gzip",
          footerSize: LEGACY_FOOTER_SIZE,
          tocOffset: off,
          dataEnd: off,
        };
      }
      errors.push("legacy footer TOC offset invalid");
    }
  }
  if (blobSize < LEGACY_FOOTER_SIZE && blobSize < ZSTD_FOOTER_SIZE) {
    throw new FooterError(`blob of ${blobSize} bytes is smaller than any footer`);
  }
  throw new FooterError(`no eStargz footer found (${errors.join("; ") || "unknown tail"})`);
}
