/**
 * eStargz: the seekable layer format the snapshotter mounts lazily. A standalone library (no
 * FUSE, no HTTP): read side {@link openBlob} over any {@link BlobReader}; write side
 * {@link convertLayer} and {@link convertOciLayout}.
 *
 * Reading, for the lazy filesystem:
 * ```ts
 * const blob = await openBlob(remoteBlob, { expectedTocDigest });
 * blob.entry("usr/bin/env");          // EstargzNode (hardlinks resolved, numLink counted)
 * blob.children("usr/bin");           // ReadonlyMap<name, EstargzNode> in TOC order
 * const c = blob.chunkAt("usr/bin/env", 4096)!;
 * // one chunk: fetch + decompress + verify
 * await blob.readChunk(c);
 * // many chunks in one range request: fetch [c.compressedOffset, c.compressedEnd) of each,
 * // then decode each extent
 * blob.decodeChunk(c, bytes);
 * ```
 * Errors are {@link EstargzError}s with a `code` (footer, external-toc, toc, toc-digest,
 * chunk-digest, chunk-decode, invalid-entry, out-of-range, tar).
 */
export {
  type BlobReader,
  type Chunk,
  type CompactIndex,
  decodeChunk,
  decodeChunkAsync,
  EstargzBlob,
  type EstargzNode,
  fileBlobReader,
  MAX_CHUNK_BYTES,
  MAX_TOC_BYTES,
  type Member,
  NODE_TYPES,
  type NodeType,
  openBlob,
  type OpenOptions,
} from "./reader.ts";
export {
  type BlobSink,
  convertLayer,
  type ConvertOptions,
  type ConvertResult,
  type LayerSource,
} from "./writer.ts";
export { convertOciLayout, type OciConvertOptions, type OciConvertResult } from "./oci.ts";
export {
  ChunkDecodeError,
  ChunkDigestMismatchError,
  EstargzError,
  type EstargzErrorCode,
  FooterError,
  InvalidEntryError,
  OutOfRangeError,
  TarError,
  TocDigestMismatchError,
  TocError,
} from "./errors.ts";
export {
  type BlobFormat,
  encodeGzipFooter,
  encodeLegacyFooter,
  type Footer,
  parseFooter,
} from "./footer.ts";
export {
  cleanEntryName,
  decodeToc,
  decodeXattrs,
  encodeToc,
  MAX_NAME_BYTES,
  MAX_TOC_ENTRIES,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  type Toc,
  TOC_DIGEST_ANNOTATION,
  TOC_TAR_NAME,
  type TocEntry,
  TocEntrySchema,
  TocSchema,
  UNCOMPRESSED_SIZE_ANNOTATION,
} from "./toc.ts";
