import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parse as parseToml } from "smol-toml";
import { scanKeyLines } from "./_lines.ts";
import { dottedKey, editDistance } from "./_keys.ts";

/** Scans `text` after checking that it is valid TOML (the scanner's precondition). */
function scan(text: string): ReturnType<typeof scanKeyLines> {
  parseToml(text);
  return scanKeyLines(text);
}

describe("scanKeyLines", () => {
  it("finds top-level keys, table headers and keys in tables", () => {
    const lines = scan("a = 1\n\n# [not.a.table]\n[blob]\n  chunk_size = 2 # c\nb = 3\n");
    assert.equal(lines.lineOf(["a"]), 1);
    assert.equal(lines.lineOf(["blob"]), 4);
    assert.equal(lines.lineOf(["blob", "chunk_size"]), 5);
    assert.equal(lines.lineOf(["blob", "b"]), 6);
    assert.equal(lines.lineOf(["not"]), undefined);
  });

  it("skips multi-line strings and arrays without losing count", () => {
    const text = [
      'a = """',
      "x = 1",
      '[fake]"""',
      "b = '''",
      "y = 2 ''' # done",
      "c = [",
      '  "]", # ]',
      "  2,",
      "]",
      'd = "\\"[e]"',
      "e = 5",
    ].join("\n");
    const lines = scan(text);
    assert.equal(lines.lineOf(["b"]), 4);
    assert.equal(lines.lineOf(["c"]), 6);
    assert.equal(lines.lineOf(["d"]), 10);
    assert.equal(lines.lineOf(["e"]), 11);
    assert.equal(lines.lineOf(["x"]), undefined);
    assert.equal(lines.lineOf(["fake"]), undefined);
  });

  it("handles quoted and dotted keys", () => {
    const text = [
      '"quoted key" = 1',
      "site.'x.y'.name = 2",
      '[resolver.host."ghcr.io"]',
      'mirrors = [{ host = "m" }]',
    ].join("\n");
    const lines = scan(text);
    assert.equal(lines.lineOf(["quoted key"]), 1);
    assert.equal(lines.lineOf(["site", "x.y", "name"]), 2);
    assert.equal(lines.lineOf(["resolver", "host", "ghcr.io"]), 3);
    // Keys inside an inline table resolve to the line of the key that holds it.
    assert.equal(lines.lineOf(["resolver", "host", "ghcr.io", "mirrors", 0, "host"]), 4);
  });

  it("numbers the elements of arrays of tables, including tables under them", () => {
    const text = [
      '[[resolver.host."a".mirrors]]', // 1
      'host = "m0"',
      '[[resolver.host."a".mirrors]]', // 3
      'host = "m1"',
      '[resolver.host."a".mirrors.header]', // 5
      'x = "1"',
      '[[resolver.host."b".mirrors]]', // 7
      'host = "n0"',
    ].join("\n");
    const lines = scan(text);
    assert.equal(lines.lineOf(["resolver", "host", "a", "mirrors", 0, "host"]), 2);
    assert.equal(lines.lineOf(["resolver", "host", "a", "mirrors", 1]), 3);
    assert.equal(lines.lineOf(["resolver", "host", "a", "mirrors", 1, "host"]), 4);
    assert.equal(lines.lineOf(["resolver", "host", "a", "mirrors", 1, "header", "x"]), 6);
    assert.equal(lines.lineOf(["resolver", "host", "b", "mirrors", 0, "host"]), 8);
    assert.equal(lines.lineOf(["resolver", "host", "b", "mirrors", 0, "nope"]), 7);
  });

  it("copes with CRLF line ends", () => {
    const lines = scan("a = 1\r\n[t]\r\nb = 2\r\n");
    assert.equal(lines.lineOf(["t", "b"]), 3);
  });
});

describe("key helpers", () => {
  it("dottedKey quotes only what TOML would", () => {
    assert.equal(dottedKey(["blob", "chunk_size"]), "blob.chunk_size");
    assert.equal(
      dottedKey(["resolver", "host", "ghcr.io", "mirrors", 2, "host"]),
      'resolver.host."ghcr.io".mirrors[2].host',
    );
  });

  it("editDistance counts a swap as one edit", () => {
    assert.equal(editDistance("prefetch_sise", "prefetch_size"), 1);
    assert.equal(editDistance("max_retires", "max_retries"), 1);
    assert.equal(editDistance("", "abc"), 3);
    assert.equal(editDistance("kitten", "sitting"), 3);
  });
});
