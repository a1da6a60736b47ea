/**
 * containerd's filter language, as `ctr snapshots ls` and containerd's metadata layer send it:
 * `selector[,selector…]` where all selectors must match, `selector := fieldpath [op value]`,
 * `op := == | != | ~=`, fields and values may be quoted with `"…"` (or `/…/`, `|…|` after `~=`).
 * A list of filters matches when any one of them matches.
 */
import { InvalidArgumentError } from "./errors.ts";

/** Looks up a field path on the object being filtered; `undefined` when it has no such field. */
export type FieldLookup = (fieldpath: readonly string[]) => string | undefined;

type Operator = "present" | "==" | "!=" | "~=";

interface Selector {
  fieldpath: string[];
  op: Operator;
  value: string;
  re?: RegExp;
}

/** A parsed filter list: true when any of its filters matches. */
export interface Filter {
  match(lookup: FieldLookup): boolean;
}

class FilterSyntaxError extends InvalidArgumentError {
  constructor(input: string, pos: number, msg: string) {
    super(
      `filters: parse error: [${input.slice(0, pos)} >|${input.slice(pos, pos + 1)}|< ${
        input.slice(pos + 1)
      }]: ${msg}`,
    );
  }
}

const isFieldChar = (c: string): boolean => /[A-Za-z0-9_]/.test(c);
const isSpace = (c: string): boolean => /\s/.test(c);

class Parser {
  private pos = 0;
  constructor(private readonly input: string) {}

  private fail(msg: string, at = this.pos): never {
    throw new FilterSyntaxError(this.input, at, msg);
  }

  private skipSpace(): void {
    while (this.pos < this.input.length && isSpace(this.input[this.pos]!)) this.pos++;
  }

  private peek(): string | undefined {
    this.skipSpace();
    return this.input[this.pos];
  }

  parse(): Selector[] {
    const selectors = [this.selector()];
    for (;;) {
      const c = this.peek();
      if (c === undefined) return selectors;
      if (c !== ",") this.fail(`unexpected input: ${c}`);
      this.pos++;
      selectors.push(this.selector());
    }
  }

  private selector(): Selector {
    const fieldpath = [this.field()];
    while (this.peek() === ".") {
      this.pos++;
      fieldpath.push(this.field());
    }
    const c = this.peek();
    if (c === undefined || c === ",") return { fieldpath, op: "present", value: "" };
    const start = this.pos;
    let op = "";
    while (this.pos < this.input.length && "=!~".includes(this.input[this.pos]!)) {
      op += this.input[this.pos++];
    }
    if (op !== "==" && op !== "!=" && op !== "~=") {
      this.fail(
        op ? `unsupported operator "${op}"` : `expected an operator ("=="|"!="|"~=")`,
        start,
      );
    }
    const value = this.value(op === "~=");
    if (op !== "~=") return { fieldpath, op, value };
    try {
      return { fieldpath, op, value, re: new RegExp(value) };
    } catch (err) {
      return this.fail(`bad regular expression: ${(err as Error).message}`, start);
    }
  }

  private field(): string {
    const c = this.peek();
    if (c === '"') return this.quoted('"');
    const start = this.pos;
    while (this.pos < this.input.length && isFieldChar(this.input[this.pos]!)) this.pos++;
    if (this.pos === start) this.fail("expected field or quoted");
    return this.input.slice(start, this.pos);
  }

  private value(allowAltQuotes: boolean): string {
    const c = this.peek();
    if (c === undefined) this.fail("expected value or quoted");
    if (c === '"' || (allowAltQuotes && (c === "/" || c === "|"))) return this.quoted(c);
    const start = this.pos;
    while (
      this.pos < this.input.length && this.input[this.pos] !== "," &&
      !isSpace(this.input[this.pos]!)
    ) this.pos++;
    if (this.pos === start) this.fail("expected value or quoted");
    return this.input.slice(start, this.pos);
  }

  /** A Go-syntax quoted string (the escapes Go's strconv.Unquote knows). */
  private quoted(q: string): string {
    const start = this.pos++;
    let out = "";
    for (;;) {
      const c = this.input[this.pos++];
      if (c === undefined || c === "\n") this.fail("quoted literal not terminated", start);
      if (c === q) return out;
      if (c !== "\\") {
        out += c;
        continue;
      }
      const e = this.input[this.pos++];
      const simple: Record<string, string> = {
        a: "\x07",
        b: "\b",
        f: "\f",
        n: "\n",
        r: "\r",
        t: "\t",
        v: "\v",
        "\\": "\\",
      };
      if (e !== undefined && e in simple) out += simple[e];
      else if (e === q) out += q;
      else if (e === "x" || e === "u" || e === "U") {
        const n = e === "x" ? 2 : e === "u" ? 4 : 8;
        const hex = this.input.slice(this.pos, this.pos + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.fail("illegal escape sequence");
        this.pos += n;
        out += String.fromCodePoint(parseInt(hex, 16));
      } else if (e !== undefined && /[0-7]/.test(e)) {
        const oct = this.input.slice(this.pos - 1, this.pos + 2);
        if (!/^[0-7]{3}$/.test(oct)) this.fail("illegal escape sequence");
        this.pos += 2;
        out += String.fromCharCode(parseInt(oct, 8));
      } else this.fail("illegal escape sequence");
    }
  }
}

function matchSelector(s: Selector, lookup: FieldLookup): boolean {
  const v = lookup(s.fieldpath);
  switch (s.op) {
    case "present":
      return v !== undefined;
    case "==":
      return v === s.value;
    case "!=":
      return v !== s.value;
    case "~=":
      return v !== undefined && s.re!.test(v);
  }
}

/**
 * Parses containerd filter strings; an empty list (or empty strings) matches everything.
 * Throws {@link InvalidArgumentError} on a syntax error.
 */
export function parseFilters(filters: readonly string[]): Filter {
  const alternatives = filters.filter((f) => f !== "").map((f) => new Parser(f).parse());
  if (alternatives.length < filters.length || alternatives.length === 0) {
    return { match: () => true };
  }
  return {
    match: (lookup) => alternatives.some((all) => all.every((s) => matchSelector(s, lookup))),
  };
}
