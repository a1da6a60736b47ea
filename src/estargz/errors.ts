/** Typed failures of the eStargz library; callers map `code` to FUSE errnos or exit codes. */

/** What went wrong, machine-readable. */
export type EstargzErrorCode =
  | "footer"
  | "external-toc"
  | "toc"
  | "toc-digest"
  | "chunk-digest"
  | "chunk-decode"
  | "invalid-entry"
  | "out-of-range"
  | "tar";

/** Base class of every error thrown by `src/estargz/`. */
export class EstargzError extends Error {
  override name = "EstargzError";
  constructor(readonly code: EstargzErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The blob's tail is not a footer we know (or the blob is too small for one). */
export class FooterError extends EstargzError {
  override name = "FooterError";
  constructor(message: string, code: "footer" | "external-toc" = "footer") {
    super(code, message);
  }
}

/** The TOC could not be decompressed or decoded, or does not match the schema. */
export class TocError extends EstargzError {
  override name = "TocError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("toc", message, options);
  }
}

/** The sha256 of the TOC JSON differs from the digest the caller expected. */
export class TocDigestMismatchError extends EstargzError {
  override name = "TocDigestMismatchError";
  constructor(readonly expected: string, readonly actual: string) {
    super("toc-digest", `TOC digest mismatch: expected ${expected}, got ${actual}`);
  }
}

/** A chunk's content does not match its `chunkDigest` (or could not be decompressed). */
export class ChunkDigestMismatchError extends EstargzError {
  override name = "ChunkDigestMismatchError";
  constructor(
    readonly path: string,
    readonly chunkOffset: number,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      "chunk-digest",
      `chunk digest mismatch in "${path}" at offset ${chunkOffset}: expected ${expected}, got ${actual}`,
    );
  }
}

/** A chunk's compressed bytes could not be decompressed into the expected length. */
export class ChunkDecodeError extends EstargzError {
  override name = "ChunkDecodeError";
  constructor(readonly path: string, readonly chunkOffset: number, reason: string) {
    super("chunk-decode", `cannot decode chunk of "${path}" at offset ${chunkOffset}: ${reason}`);
  }
}

/** A TOC entry is unusable: its name escapes the root, its link target does, or it is malformed. */
export class InvalidEntryError extends EstargzError {
  override name = "InvalidEntryError";
  constructor(readonly entryName: string, reason: string) {
    super("invalid-entry", `invalid TOC entry ${JSON.stringify(entryName)}: ${reason}`);
  }
}

/** A TOC entry points outside the blob's data region. */
export class OutOfRangeError extends EstargzError {
  override name = "OutOfRangeError";
  constructor(readonly entryName: string, message: string) {
    super("out-of-range", message);
  }
}

/** The input of the converter is not a tar stream we can read. */
export class TarError extends EstargzError {
  override name = "TarError";
  constructor(message: string) {
    super("tar", message);
  }
}
