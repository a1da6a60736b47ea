/**
 * The eStargz table of contents (`stargz.index.json`): its schema, decoding and encoding, and the
 * entry-name rules. Field names and their `omitempty` behaviour follow the Go `estargz.TOCEntry`.
 */
import * as v from "valibot";
import { InvalidEntryError, TocError } from "./errors.ts";

/** Name of the tar entry that carries the TOC in gzip eStargz. */
export const TOC_TAR_NAME = "stargz.index.json";
/** Landmark placed after the prioritized files. */
export const PREFETCH_LANDMARK = ".prefetch.landmark";
/** Landmark placed first when there are no prioritized files. */
export const NO_PREFETCH_LANDMARK = ".no.prefetch.landmark";
/** Layer annotation holding the TOC digest. */
export const TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest";
/** Layer annotation holding the size of the uncompressed layer. */
export const UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size";

/** The kinds of TOC entry. */
export const ENTRY_TYPES = [
  "dir",
  "reg",
  "symlink",
  "hardlink",
  "char",
  "block",
  "fifo",
  "chunk",
] as const;
/**
 * Most entries a TOC may hold: every entry becomes an inode kept in memory while the layer is
 * mounted. The largest layers seen in practice (CUDA, node_modules-heavy images) hold a few
 * hundred thousand files.
 */
export const MAX_TOC_ENTRIES = 1 << 20;
/** Longest entry name in bytes: Linux's PATH_MAX, which no path the kernel looks up exceeds. */
export const MAX_NAME_BYTES = 4096;

/** One of {@link ENTRY_TYPES}. */
export type EntryType = (typeof ENTRY_TYPES)[number];

const int = v.pipe(v.number(), v.integer(), v.minValue(0));
const sha256 = v.pipe(v.string(), v.regex(/^sha256:[0-9a-f]{64}$/));

/** valibot schema of one TOC entry. */
export const TocEntrySchema = v.object({
  name: v.string(),
  type: v.picklist(ENTRY_TYPES),
  size: v.optional(int),
  modtime: v.optional(v.string()),
  linkName: v.optional(v.string()),
  mode: v.optional(int),
  uid: v.optional(int),
  gid: v.optional(int),
  userName: v.optional(v.string()),
  groupName: v.optional(v.string()),
  offset: v.optional(int),
  innerOffset: v.optional(int),
  devMajor: v.optional(int),
  devMinor: v.optional(int),
  xattrs: v.optional(v.record(v.string(), v.string())),
  digest: v.optional(v.union([v.literal(""), sha256])),
  chunkOffset: v.optional(int),
  chunkSize: v.optional(int),
  chunkDigest: v.optional(v.union([v.literal(""), sha256])),
});

/** valibot schema of the whole TOC. */
export const TocSchema = v.object({
  version: v.literal(1),
  entries: v.pipe(
    v.array(TocEntrySchema),
    v.maxLength(MAX_TOC_ENTRIES, `more than ${MAX_TOC_ENTRIES} entries`),
  ),
});

/** One TOC entry as stored in the JSON (`xattrs` values are base64). */
export type TocEntry = v.InferOutput<typeof TocEntrySchema>;
/** The TOC as stored in the JSON. */
export type Toc = v.InferOutput<typeof TocSchema>;

const ENTRY_TYPE_SET: ReadonlySet<unknown> = new Set(ENTRY_TYPES);
const INT_FIELDS = [
  "size",
  "mode",
  "uid",
  "gid",
  "offset",
  "innerOffset",
  "devMajor",
  "devMinor",
  "chunkOffset",
  "chunkSize",
] as const;
const STRING_FIELDS = ["modtime", "linkName", "userName", "groupName"] as const;
const SHA256_HEX = /^sha256:[0-9a-f]{64}$/;

/**
 * The same checks as {@link TocSchema}, in place and without copying: TOCs of 100k entries are
 * opened on the mount path. On failure {@link decodeToc} asks valibot for the precise message.
 */
function isValidToc(raw: unknown): raw is Toc {
  if (typeof raw !== "object" || raw === null) return false;
  const toc = raw as { version?: unknown; entries?: unknown };
  if (toc.version !== 1 || !Array.isArray(toc.entries)) return false;
  for (const e of toc.entries as Record<string, unknown>[]) {
    if (typeof e !== "object" || e === null || Array.isArray(e)) return false;
    if (typeof e.name !== "string" || !ENTRY_TYPE_SET.has(e.type)) return false;
    for (const k of INT_FIELDS) {
      const n = e[k];
      if (n !== undefined && !(typeof n === "number" && Number.isInteger(n) && n >= 0)) {
        return false;
      }
    }
    for (const k of STRING_FIELDS) {
      if (e[k] !== undefined && typeof e[k] !== "string") return false;
    }
    for (const d of [e.digest, e.chunkDigest]) {
      if (d !== undefined && d !== "" && !(typeof d === "string" && SHA256_HEX.test(d))) {
        return false;
      }
    }
    const x = e.xattrs;
    if (x !== undefined) {
      if (typeof x !== "object" || x === null || Array.isArray(x)) return false;
      for (const k in x) if (typeof (x as Record<string, unknown>)[k] !== "string") return false;
    }
  }
  return true;
}

/** Decodes and validates TOC JSON bytes. */
export function decodeToc(json: Uint8Array): Toc {
  return decodeTocText(new TextDecoder().decode(json));
}

function decodeTocText(text: string): Toc {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new TocError(`error decoding TOC JSON: ${(err as Error).message}`, { cause: err });
  }
  const entries = (raw as { entries?: unknown } | null)?.entries;
  if (Array.isArray(entries) && entries.length > MAX_TOC_ENTRIES) {
    throw new TocError(`TOC has ${entries.length} entries, more than ${MAX_TOC_ENTRIES}`);
  }
  if (isValidToc(raw)) return raw;
  const r = v.safeParse(TocSchema, raw);
  if (!r.success) {
    const issue = r.issues[0];
    const where = v.getDotPath(issue) ?? "(root)";
    throw new TocError(`TOC JSON does not match the schema at ${where}: ${issue.message}`);
  }
  return r.output;
}

/** TOC JSON decoded per step of {@link decodeTocSteps} (about a millisecond of work each). */
const DECODE_STEP_BYTES = 1 << 20;
/** Entries parsed at once by {@link decodeTocSteps}. */
const PARSE_STEP_ENTRIES = 512;
const ENTRIES_START = /^\s*\{\s*"version"\s*:\s*1\s*,\s*"entries"\s*:\s*\[/;

/**
 * {@link decodeToc} in steps, so that a large TOC neither holds the event loop for the whole
 * parse nor exists whole in memory: the generator yields after each slice of work and hands the
 * entries to `sink` a few hundred at a time, checked as {@link decodeToc} checks them. The text
 * is cut between the entries of the `entries` array. A TOC laid out otherwise (other keys, other
 * order) or failing the checks is decoded by {@link decodeToc} at once, which gives the precise
 * error, and returned whole: the entries sunk so far are then to be forgotten. Returns
 * undefined when every entry went to `sink`.
 */
export function* decodeTocSteps(
  json: Uint8Array,
  sink: (entries: TocEntry[]) => void,
): Generator<void, Toc | undefined, void> {
  const text = yield* decodeText(json);
  // Only the text is needed from here on: let the bytes go (the caller lets go of its own).
  json = NO_BYTES;

  const head = ENTRIES_START.exec(text.slice(0, 256));
  if (!head) return decodeTocText(text);
  let count = 0;
  let batch: unknown[] = [];
  /** Checks the entries parsed since the last flush and hands them over. */
  const flush = (): boolean => {
    if (!isValidToc({ version: 1, entries: batch })) return false;
    count += batch.length;
    if (count > MAX_TOC_ENTRIES) return false;
    sink(batch as TocEntry[]);
    batch = [];
    return true;
  };
  // Between entries: what may come next (an entry or the end, a comma or the end, an entry).
  const FIRST = 0, AFTER = 1, NEXT = 2;
  let want = FIRST;
  let depth = 0;
  let start = -1;
  let i = head[0].length;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (depth > 0) {
      if (c === 0x22) { // skip the string to its closing quote
        for (i++; i < text.length; i++) {
          const d = text.charCodeAt(i);
          if (d === 0x5c) i++;
          else if (d === 0x22) break;
        }
      } else if (c === 0x7b || c === 0x5b) depth++;
      else if ((c === 0x7d || c === 0x5d) && --depth === 0) {
        // One entry at a time: parsing a slice of the text copies nothing (a run of entries
        // wrapped in brackets would be copied whole first).
        try {
          batch.push(JSON.parse(text.slice(start, i + 1)));
        } catch {
          return decodeTocText(text);
        }
        want = AFTER;
        if (batch.length === PARSE_STEP_ENTRIES) {
          if (!flush()) return decodeTocText(text);
          yield;
        }
      }
    } else if (c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d) continue;
    else if (c === 0x7b && want !== AFTER) {
      start = i;
      depth = 1;
    } else if (c === 0x2c && want === AFTER) want = NEXT;
    else if (c === 0x5d && want !== NEXT) break; // the end of the entries array
    else return decodeTocText(text);
  }
  if (i >= text.length || !/^\]\s*\}\s*$/.test(text.slice(i))) return decodeTocText(text);
  if (batch.length > 0 && !flush()) return decodeTocText(text);
  return undefined;
}

const NO_BYTES = new Uint8Array(0);

/** The text of UTF-8 `bytes`, a MiB per step. */
function* decodeText(bytes: Uint8Array): Generator<void, string, void> {
  const decoder = new TextDecoder();
  const pieces: string[] = [];
  for (let at = 0; at < bytes.length; at += DECODE_STEP_BYTES) {
    const end = Math.min(bytes.length, at + DECODE_STEP_BYTES);
    pieces.push(decoder.decode(bytes.subarray(at, end), { stream: end < bytes.length }));
    yield;
  }
  return pieces.join("");
}

/** Encodes a TOC the way Go's `json.MarshalIndent(toc, "", "\t")` lays it out. */
export function encodeToc(toc: Toc): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(toc, null, "\t"));
}

/**
 * Normalises a tar/TOC name to a root-relative path (`./a/b/` → `a/b`, `./` → ``). Throws
 * {@link InvalidEntryError} when the name holds NUL, is absolute, climbs out with `..`, or is
 * longer than {@link MAX_NAME_BYTES} (which also bounds how deep a tree can nest).
 */
export function cleanEntryName(name: string): string {
  // A UTF-16 unit takes at most 3 bytes in UTF-8: count bytes only when it could matter.
  if (name.length * 3 > MAX_NAME_BYTES && Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw new InvalidEntryError(
      name.slice(0, 100) + "…",
      `name longer than ${MAX_NAME_BYTES} bytes`,
    );
  }
  // Fast path for the common already-clean name.
  if (
    name.length > 0 && name.charCodeAt(0) !== 47 && !name.includes("//") &&
    !name.includes("\0") && !/(^|\/)\.\.?(\/|$)/.test(name) && !name.endsWith("/")
  ) {
    return name;
  }
  if (name.includes("\0")) throw new InvalidEntryError(name, "name contains a NUL byte");
  if (name.startsWith("/") && name !== "/" && !/^\/+$/.test(name)) {
    throw new InvalidEntryError(name, "absolute name");
  }
  const out: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") throw new InvalidEntryError(name, "name escapes the root with '..'");
    out.push(part);
  }
  return out.join("/");
}

/** Formats a modification time as the TOC stores it: RFC 3339 UTC, rounded to the second. */
export function formatModtime(ms: number): string | undefined {
  const s = Math.round(ms / 1000);
  // Beyond ±8.64e15 ms a Date is invalid (toISOString throws): a PAX mtime can say anything.
  if (!Number.isFinite(s) || s === 0 || Math.abs(s) > 8.64e12) return undefined;
  return new Date(s * 1000).toISOString().replace(/\.\d+Z$/, "Z");
}

/** Parses a TOC `modtime` into milliseconds since the epoch (0 when absent or unparsable). */
export function parseModtime(s: string | undefined): number {
  if (!s) return 0;
  const t = Date.parse(s);
  return Number.isNaN(t) ? 0 : t;
}

/** Decodes an entry's base64 xattr values. */
export function decodeXattrs(entry: Pick<TocEntry, "xattrs">): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const [k, b64] of Object.entries(entry.xattrs ?? {})) {
    const buf = Buffer.from(b64, "base64");
    out.set(k, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
  }
  return out;
}
