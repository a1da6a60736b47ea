/**
 * Where each key of a TOML document sits. smol-toml returns values without positions, so the
 * error messages find the line themselves: this scanner walks the text once, tracking table
 * headers (`[a."b.c"]`, `[[a.b]]` with the index of each array element) and keys (bare, quoted,
 * dotted), and skips values, including multi-line strings and arrays. It expects a document
 * that already parsed; it does not validate.
 */

/** A key's position in the parsed document: table and key names, array indices as numbers. */
export type KeyPath = readonly (string | number)[];

/** Line numbers (1-based) of the keys and table headers of one document. */
export class KeyLines {
  readonly #lines = new Map<string, number>();

  /** Records `path` at `line` unless it was seen before (the first mention wins). */
  add(path: KeyPath, line: number): void {
    const id = JSON.stringify(path);
    if (!this.#lines.has(id)) this.#lines.set(id, line);
  }

  /** The line of `path`, or of its closest recorded ancestor (e.g. an inline table's key). */
  lineOf(path: KeyPath): number | undefined {
    for (let n = path.length; n > 0; n--) {
      const line = this.#lines.get(JSON.stringify(path.slice(0, n)));
      if (line !== undefined) return line;
    }
    return undefined;
  }
}

const BARE_KEY = /[A-Za-z0-9_-]/;

class Scanner {
  pos = 0;
  line = 1;
  constructor(readonly text: string) {}

  get ch(): string {
    return this.text[this.pos] ?? "";
  }

  startsWith(s: string): boolean {
    return this.text.startsWith(s, this.pos);
  }

  advance(n = 1): void {
    for (let i = 0; i < n && this.pos < this.text.length; i++) {
      if (this.text[this.pos] === "\n") this.line++;
      this.pos++;
    }
  }

  skipSpaces(): void {
    while (this.ch === " " || this.ch === "\t") this.advance();
  }

  skipToEol(): void {
    while (this.pos < this.text.length && this.ch !== "\n") this.advance();
  }

  /** `a."b.c".'d'` → ["a", "b.c", "d"]. */
  readKey(): string[] {
    const parts: string[] = [];
    for (;;) {
      this.skipSpaces();
      if (this.ch === '"') parts.push(this.readBasicString());
      else if (this.ch === "'") parts.push(this.readLiteralString());
      else {
        const start = this.pos;
        while (BARE_KEY.test(this.ch)) this.advance();
        parts.push(this.text.slice(start, this.pos));
      }
      this.skipSpaces();
      if (this.ch !== ".") return parts;
      this.advance();
    }
  }

  readBasicString(): string {
    const start = this.pos;
    this.advance();
    while (this.pos < this.text.length && this.ch !== '"' && this.ch !== "\n") {
      this.advance(this.ch === "\\" ? 2 : 1);
    }
    this.advance();
    const raw = this.text.slice(start, this.pos);
    try {
      return JSON.parse(raw) as string;
    } catch {
      return raw.slice(1, -1);
    }
  }

  readLiteralString(): string {
    this.advance();
    const start = this.pos;
    while (this.pos < this.text.length && this.ch !== "'" && this.ch !== "\n") this.advance();
    const s = this.text.slice(start, this.pos);
    this.advance();
    return s;
  }

  /** Skips one value (which may span lines inside brackets or multi-line strings). */
  skipValue(): void {
    let depth = 0;
    while (this.pos < this.text.length) {
      if (this.startsWith('"""') || this.startsWith("'''")) {
        const quote = this.text.slice(this.pos, this.pos + 3);
        this.advance(3);
        while (this.pos < this.text.length && !this.startsWith(quote)) {
          this.advance(quote === '"""' && this.ch === "\\" ? 2 : 1);
        }
        // A closing run may hold up to two extra quote characters that belong to the string.
        while (this.text.startsWith(quote[0], this.pos + 3)) this.advance();
        this.advance(3);
      } else if (this.ch === '"') {
        this.readBasicString();
      } else if (this.ch === "'") {
        this.readLiteralString();
      } else if (this.ch === "[" || this.ch === "{") {
        depth++;
        this.advance();
      } else if (this.ch === "]" || this.ch === "}") {
        depth--;
        this.advance();
      } else if (this.ch === "#") {
        this.skipToEol();
      } else if (this.ch === "\n") {
        if (depth <= 0) return;
        this.advance();
      } else {
        this.advance();
      }
    }
  }
}

/** Scans `text` (a valid TOML document) and returns the line of every key and table header. */
export function scanKeyLines(text: string): KeyLines {
  const lines = new KeyLines();
  const s = new Scanner(text);
  // Current element index of every array of tables, by its resolved path.
  const arrayIndex = new Map<string, number>();
  const resolve = (names: readonly string[]): (string | number)[] => {
    const out: (string | number)[] = [];
    for (const name of names) {
      out.push(name);
      const index = arrayIndex.get(JSON.stringify(out));
      if (index !== undefined) out.push(index);
    }
    return out;
  };
  let table: (string | number)[] = [];
  while (s.pos < text.length) {
    s.skipSpaces();
    const line = s.line;
    if (s.ch === "\n" || s.ch === "\r" || s.ch === "#" || s.ch === "") {
      s.skipToEol();
      s.advance();
      continue;
    }
    if (s.startsWith("[[")) {
      s.advance(2);
      const names = s.readKey();
      const path = [...resolve(names.slice(0, -1)), names[names.length - 1]];
      const id = JSON.stringify(path);
      const index = (arrayIndex.get(id) ?? -1) + 1;
      arrayIndex.set(id, index);
      table = [...path, index];
      lines.add(path, line);
      lines.add(table, line);
    } else if (s.ch === "[") {
      s.advance();
      table = resolve(s.readKey());
      lines.add(table, line);
    } else {
      const names = s.readKey();
      lines.add([...table, ...names], line);
      s.skipSpaces();
      if (s.ch === "=") s.advance();
      s.skipSpaces();
      s.skipValue();
      continue;
    }
    s.skipToEol();
    s.advance();
  }
  return lines;
}
