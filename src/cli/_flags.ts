/**
 * Command-line flags parsed the way Go's `flag` package does (`-name`, `--name`, `-name=value`,
 * `-name value`, booleans without a value), so scripts written for the Go daemon keep working.
 * Unlike Go, flags may also follow positional arguments; `--` ends flag parsing.
 */

/** The kinds of value a flag takes. */
export type FlagKind = "string" | "bool" | "int" | "strings";

/** One flag a command accepts. */
export interface FlagSpec {
  name: string;
  kind: FlagKind;
  help: string;
  /** Shown in help; the parsed result holds it when the flag is absent (except `strings`). */
  default?: string | number | boolean;
  /** Name of the value in help, e.g. `PATH`. */
  valueName?: string;
}

/** Parsed flags plus the remaining positional arguments. */
export interface ParsedFlags {
  values: Record<string, string | number | boolean | string[] | undefined>;
  /** Flags that were given explicitly on the command line. */
  given: Set<string>;
  positional: string[];
}

/** A command-line mistake: printed as one line, exit code 2 (as Go's flag package does). */
export class UsageError extends Error {
  override name = "UsageError";
}

function parseBool(name: string, raw: string): boolean {
  if (["1", "t", "T", "true", "TRUE", "True"].includes(raw)) return true;
  if (["0", "f", "F", "false", "FALSE", "False"].includes(raw)) return false;
  throw new UsageError(`invalid boolean value "${raw}" for flag -${name}`);
}

function parseIntFlag(name: string, raw: string): number {
  if (!/^-?\d+$/.test(raw)) {
    throw new UsageError(`invalid integer value "${raw}" for flag -${name}`);
  }
  return Number(raw);
}

/** Parses `args` against `specs`; throws {@link UsageError} on unknown flags or bad values. */
export function parseFlags(args: readonly string[], specs: readonly FlagSpec[]): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values: ParsedFlags["values"] = {};
  for (const s of specs) values[s.name] = s.kind === "strings" ? [] : s.default;
  const given = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positional.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`flag provided but not defined: -${name}`);
    let raw: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (spec.kind === "bool") {
      values[name] = raw === undefined ? true : parseBool(name, raw);
    } else {
      if (raw === undefined) {
        if (i + 1 >= args.length) throw new UsageError(`flag needs an argument: -${name}`);
        raw = args[++i];
      }
      if (spec.kind === "int") values[name] = parseIntFlag(name, raw);
      else if (spec.kind === "strings") (values[name] as string[]).push(raw);
      else values[name] = raw;
    }
    given.add(name);
  }
  return { values, given, positional };
}

/** Help text for a list of flags, one per line. */
export function formatFlags(specs: readonly FlagSpec[]): string {
  return specs
    .map((s) => {
      const value = s.kind === "bool" ? "" : ` ${s.valueName ?? s.kind}`;
      const def = s.default !== undefined && s.default !== false
        ? ` (default ${JSON.stringify(s.default)})`
        : "";
      return `  --${s.name}${value}\n        ${s.help}${def}`;
    })
    .join("\n");
}

/** A string flag's value (or its default). */
export function str(p: ParsedFlags, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

/** A boolean flag's value. */
export function bool(p: ParsedFlags, name: string): boolean {
  return p.values[name] === true;
}

/** An integer flag's value (or its default). */
export function int(p: ParsedFlags, name: string): number | undefined {
  const v = p.values[name];
  return typeof v === "number" ? v : undefined;
}

/** A repeatable flag's values. */
export function strs(p: ParsedFlags, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v) ? v : [];
}
