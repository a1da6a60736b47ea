/**
 * The daemon's configuration: the Go snapshotter's TOML file (every upstream key, same names,
 * same effective defaults) plus our own `[admin]` and `[cache]` tables. See docs/config.md.
 *
 * Unlike upstream, which silently ignores what it does not know, an unknown key or a value of
 * the wrong type stops start-up with a {@link ConfigError} naming the key, its line and the
 * closest known key. Upstream keys we accept but do not act on yet produce one warning each.
 */
import * as fs from "node:fs/promises";
import { parse as parseToml, TomlError } from "smol-toml";
import * as v from "valibot";
import { ANY_KEY, dottedKey, editDistance, entriesAt, leafKeys } from "./_keys.ts";
import { type KeyLines, type KeyPath, scanKeyLines } from "./_lines.ts";
import { ConfigSchema } from "./_schema.ts";

export { DEFAULT_CONFIG_TOML } from "./_default.ts";
export { ConfigSchema, MirrorSchema, parseSize } from "./_schema.ts";

/** The typed configuration with every default applied (keys spelled as in the TOML file). */
export type Config = v.InferOutput<typeof ConfigSchema>;

/** One `[[resolver.host."<registry>".mirrors]]` entry, defaults applied. */
export type MirrorConfig = Config["resolver"]["host"][string]["mirrors"][number];

/** A configuration file that cannot be used; the one-line message names the culprit. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The result of loading a configuration file. */
export interface LoadedConfig {
  config: Config;
  /** One line per accepted-but-unimplemented key. */
  warnings: string[];
  /** The file the config was read from; undefined when it is absent and defaults apply. */
  file?: string;
}

/**
 * Upstream keys that are accepted but not acted upon yet (dotted key → why). Setting one to
 * anything but its default logs one warning naming it. Remove a row when the daemon implements
 * the key, and update docs/config.md (its test checks both agree).
 */
export const UNIMPLEMENTED_KEYS: Readonly<Record<string, string>> = {
  http_cache_type: 'only the on-disk chunk cache exists (a "memory" cache is not implemented)',
  http_cache_chunk_ttl_sec:
    "chunk expiry is not implemented; bound the cache with [cache] max_size",
  filesystem_cache_type:
    'only the on-disk chunk cache exists (a "memory" cache is not implemented)',
  resolve_result_entry: "deprecated upstream and ignored there too",
  log_file_access: "per-file access logging is not implemented",
  debug_address: "there are no /debug endpoints; see [admin] address",
  ipfs: "IPFS sources are not supported",
  metadata_store: 'only the default "memory" layer metadata store exists',
  "directory_cache.max_lru_cache_entry": "the chunk cache is configured in [cache]",
  "directory_cache.max_cache_fds": "the chunk cache is configured in [cache]",
  "directory_cache.sync_add": "the chunk cache is configured in [cache]",
  "directory_cache.direct": "the chunk cache is configured in [cache]",
  "directory_cache.fadv_dontneed": "the chunk cache is configured in [cache]",
  "fuse.passthrough": "FUSE passthrough is not implemented",
  "fuse.merge_buffer_size": "FUSE passthrough is not implemented",
  "fuse.merge_worker_count": "FUSE passthrough is not implemented",
  "fuse_manager.enable": "there is no separate FUSE manager process",
  "fuse_manager.address": "there is no separate FUSE manager process",
  "fuse_manager.path": "there is no separate FUSE manager process",
};

/** The configuration used when no file exists: every key at its default. */
export function defaultConfig(): Config {
  return v.parse(ConfigSchema, {});
}

/** Loads the TOML file at `path`; a missing file is fine unless `explicit`. */
export async function loadConfig(path: string, opts: { explicit: boolean }): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await fs.readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && !opts.explicit) return { config: defaultConfig(), warnings: [] };
    if (code === "ENOENT") throw new ConfigError(`config file ${path} does not exist`);
    throw new ConfigError(`cannot read config file ${path}: ${code ?? (err as Error).message}`);
  }
  return { ...parseConfig(text, path), file: path };
}

/** Parses and validates configuration text; `source` names the file in messages. */
export function parseConfig(text: string, source: string): LoadedConfig {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const what = (err.message.split("\n")[0] ?? "").replace(/^Invalid TOML document: /, "");
      throw new ConfigError(`${source}:${err.line}: invalid TOML: ${what}`);
    }
    throw err;
  }
  const lines = scanKeyLines(text);
  const result = v.safeParse(ConfigSchema, raw, { abortEarly: false });
  if (!result.success) throw configError(result.issues, raw, lines, source);
  return { config: result.output, warnings: unimplementedWarnings(raw, lines, source) };
}

function at(source: string, line: number | undefined): string {
  return line === undefined ? source : `${source}:${line}`;
}

function valueAt(raw: unknown, path: KeyPath): unknown {
  let cur = raw;
  for (const seg of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string | number, unknown>)[seg];
  }
  return cur;
}

function describeValue(x: unknown): string {
  if (typeof x === "string") return `the string ${JSON.stringify(x)}`;
  if (typeof x === "number") return Number.isInteger(x) ? `the integer ${x}` : `the float ${x}`;
  if (typeof x === "boolean") return `the boolean ${x}`;
  if (Array.isArray(x)) return "an array";
  if (x instanceof Date) return `the date-time ${x.toISOString()}`;
  if (x !== null && typeof x === "object") return "a table";
  return String(x);
}

const LEAF_KEYS = leafKeys(ConfigSchema);

/** The known key closest to the unknown one at `path`, as a dotted key. */
function closestKey(path: KeyPath): string | undefined {
  const name = String(path[path.length - 1]);
  const parent = path.slice(0, -1);
  // The right key in the wrong table (e.g. `chunk_size` at the top level) is the likeliest.
  const elsewhere = LEAF_KEYS.find((k) =>
    k.path[k.path.length - 1] === name &&
    k.path.every((seg) => typeof seg === "string" && seg !== ANY_KEY)
  );
  if (elsewhere && dottedKey(elsewhere.path) !== dottedKey(path)) return dottedKey(elsewhere.path);
  const siblings = Object.keys(entriesAt(ConfigSchema, parent) ?? {});
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const s of siblings) {
    const d = editDistance(name, s);
    if (d < bestDistance) [best, bestDistance] = [s, d];
  }
  return best === undefined ? undefined : dottedKey([...parent, best]);
}

interface Problem {
  line: number | undefined;
  text: string;
  /** Missing keys come last: a misspelt required key is better reported as the unknown one. */
  rank: number;
}

/** A key quoted for a message; keys holding quoted segments get single quotes. */
function quoteKey(key: string): string {
  return key.includes('"') ? `'${key}'` : `"${key}"`;
}

function describeIssue(
  issue: v.BaseIssue<unknown>,
  raw: unknown,
  lines: KeyLines,
): Problem {
  const path: KeyPath = (issue.path ?? []).map((p) => p.key as string | number);
  const key = quoteKey(dottedKey(path));
  const line = lines.lineOf(path);
  const present = valueAt(raw, path);
  if (issue.type === "strict_object" && issue.expected === "never") {
    const kind = present !== null && typeof present === "object" && !Array.isArray(present)
      ? "table"
      : "key";
    const hint = closestKey(path);
    const text = `unknown ${kind} ${key}${hint ? ` (did you mean ${quoteKey(hint)}?)` : ""}`;
    return { line, text, rank: 0 };
  }
  if (present === undefined) return { line, text: `missing required key ${key}`, rank: 2 };
  return { line, text: `${key} must be ${issue.message}, got ${describeValue(present)}`, rank: 1 };
}

function configError(
  issues: readonly v.BaseIssue<unknown>[],
  raw: unknown,
  lines: KeyLines,
  source: string,
): ConfigError {
  const problems = issues.map((i) => describeIssue(i, raw, lines));
  problems.sort((a, b) =>
    Number(a.rank === 2) - Number(b.rank === 2) || (a.line ?? Infinity) - (b.line ?? Infinity) ||
    a.rank - b.rank
  );
  const first = problems[0];
  const more = problems.length > 1
    ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? "s" : ""})`
    : "";
  return new ConfigError(`${at(source, first.line)}: ${first.text}${more}`);
}

const DEFAULTS = new Map(LEAF_KEYS.map((k) => [dottedKey(k.path), k.default]));

function unimplementedWarnings(raw: unknown, lines: KeyLines, source: string): string[] {
  const warnings: { line: number | undefined; text: string }[] = [];
  for (const [key, why] of Object.entries(UNIMPLEMENTED_KEYS)) {
    const path = key.split(".");
    const value = valueAt(raw, path);
    if (value === undefined || value === DEFAULTS.get(key)) continue;
    warnings.push({ line: lines.lineOf(path), text: `ignoring ${quoteKey(key)}: ${why}` });
  }
  warnings.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  return warnings.map((w) => `${at(source, w.line)}: ${w.text}`);
}
