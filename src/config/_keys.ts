/**
 * The schema seen as a list of keys: walking it by path (to find the siblings of an unknown
 * key), listing every leaf with its default (for the docs test and `UNIMPLEMENTED_KEYS`), and
 * printing key paths the way a TOML file spells them.
 */
import * as v from "valibot";
import type { KeyPath } from "./_lines.ts";

/** Placeholder segment for the free-form keys of a record (e.g. a registry host name). */
export const ANY_KEY = "<registry>";
/** Placeholder segment for "any element" of an array of tables. */
export const ANY_INDEX = -1;

type AnySchema = v.GenericSchema;

interface Wrapper {
  type: string;
  wrapped?: AnySchema;
  entries?: Record<string, AnySchema>;
  value?: AnySchema;
  item?: AnySchema;
  default?: unknown;
}

function unwrap(schema: AnySchema): Wrapper {
  let s = schema as unknown as Wrapper;
  while (s.type === "optional" && s.wrapped) s = s.wrapped as unknown as Wrapper;
  return s;
}

/** The object schema's entries at `path` (array indices and record keys are stepped over). */
export function entriesAt(root: AnySchema, path: KeyPath): Record<string, AnySchema> | undefined {
  let s = unwrap(root);
  for (const seg of path) {
    if (s.type === "strict_object" || s.type === "object") {
      const next = typeof seg === "string" ? s.entries?.[seg] : undefined;
      if (!next) return undefined;
      s = unwrap(next);
    } else if (s.type === "record" && s.value) {
      s = unwrap(s.value);
    } else if (s.type === "array" && s.item) {
      s = unwrap(s.item);
    } else {
      return undefined;
    }
  }
  return s.type === "strict_object" || s.type === "object" ? s.entries : undefined;
}

/** One key of the schema that takes a value (not a table of further keys). */
export interface LeafKey {
  path: KeyPath;
  /** The TOML value an absent key stands for, or undefined when the key is required. */
  default: unknown;
}

/** Every leaf key of `root`, in schema order; records and arrays use the placeholders. */
export function leafKeys(root: AnySchema): LeafKey[] {
  const out: LeafKey[] = [];
  const walk = (schema: AnySchema, path: (string | number)[]): void => {
    const outer = schema as unknown as Wrapper;
    const s = unwrap(schema);
    if (s.type === "strict_object" && s.entries) {
      for (const [k, child] of Object.entries(s.entries)) walk(child, [...path, k]);
    } else if (s.type === "record" && s.value && unwrap(s.value).type === "strict_object") {
      walk(s.value, [...path, ANY_KEY]);
    } else if (s.type === "array" && s.item && unwrap(s.item).type === "strict_object") {
      walk(s.item, [...path, ANY_INDEX]);
    } else {
      out.push({
        path,
        default: outer.type === "optional"
          ? v.getDefault(schema as v.OptionalSchema<AnySchema, unknown>)
          : undefined,
      });
    }
  };
  walk(root, []);
  return out;
}

/** `["resolver","host","ghcr.io","mirrors",0,"host"]` → `resolver.host."ghcr.io".mirrors[0].host`. */
export function dottedKey(path: KeyPath): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += seg === ANY_INDEX ? "[]" : `[${seg}]`;
    else {
      const name = /^[A-Za-z0-9_-]+$/.test(seg) && seg !== ANY_KEY ? seg : JSON.stringify(seg);
      out += out === "" ? name : `.${name}`;
    }
  }
  return out;
}

/** Edit distance counting insertions, deletions, substitutions and adjacent swaps as one. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}
