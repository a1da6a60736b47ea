import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { InvalidEntryError, TocError } from "./errors.ts";
import {
  cleanEntryName,
  decodeToc,
  decodeTocSteps,
  encodeToc,
  formatModtime,
  parseModtime,
  type Toc,
} from "./toc.ts";

const enc = (x: unknown) => new TextEncoder().encode(JSON.stringify(x));

describe("cleanEntryName", () => {
  it("normalises relative spellings", () => {
    assert.equal(cleanEntryName("./a/b/"), "a/b");
    assert.equal(cleanEntryName("a//b/./c"), "a/b/c");
    assert.equal(cleanEntryName("./"), "");
    assert.equal(cleanEntryName("/"), "");
    assert.equal(cleanEntryName("usr/bin/env"), "usr/bin/env");
    assert.equal(cleanEntryName("..foo/bar..."), "..foo/bar...");
  });
  it("rejects names that escape the root, absolute names and NUL", () => {
    for (const bad of ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "a\0b"]) {
      assert.throws(() => cleanEntryName(bad), (e: unknown) => {
        assert.ok(e instanceof InvalidEntryError);
        assert.equal(e.entryName, bad);
        return true;
      });
    }
  });
});

describe("decodeToc", () => {
  it("accepts a TOC and keeps every field", () => {
    const toc = {
      version: 1,
      entries: [
        { name: "a", type: "dir", mode: 493 },
        {
          name: "a/f",
          type: "reg",
          size: 5,
          offset: 10,
          innerOffset: 3,
          xattrs: { "user.x": "aGk=" },
          digest: "sha256:" + "0".repeat(64),
          chunkDigest: "sha256:" + "1".repeat(64),
        },
      ],
    };
    assert.deepEqual(decodeToc(enc(toc)), toc);
    assert.deepEqual(decodeToc(encodeToc(toc as never)), toc);
  });
  it("rejects schema violations with the path of the bad field", () => {
    const cases: [unknown, RegExp][] = [
      [{ version: 2, entries: [] }, /version/],
      [{ version: 1, entries: [{ name: "a", type: "socket" }] }, /entries\.0\.type/],
      [{ version: 1, entries: [{ name: "a", type: "reg", size: -1 }] }, /entries\.0\.size/],
      [{ version: 1, entries: [{ name: "a", type: "reg", size: 1.5 }] }, /entries\.0\.size/],
      [{ version: 1, entries: [{ name: 1, type: "reg" }] }, /entries\.0\.name/],
      [{ version: 1, entries: [{ name: "a", type: "reg", digest: "md5:x" }] }, /digest/],
      [{ version: 1, entries: [{ name: "a", type: "reg", xattrs: { k: 1 } }] }, /xattrs/],
    ];
    for (const [toc, where] of cases) {
      assert.throws(() => decodeToc(enc(toc)), (e: unknown) => {
        assert.ok(e instanceof TocError, String(e));
        assert.match(e.message, where);
        return true;
      });
    }
    assert.throws(() => decodeToc(new TextEncoder().encode("{")), TocError);
  });
});

describe("modtime", () => {
  it("rounds to the second in RFC 3339 UTC like Go, and parses back", () => {
    assert.equal(formatModtime(1700000000499), "2023-11-14T22:13:20Z");
    assert.equal(formatModtime(1700000000500), "2023-11-14T22:13:21Z");
    assert.equal(formatModtime(0), undefined);
    assert.equal(parseModtime("2023-11-14T22:13:20Z"), 1700000000000);
    assert.equal(parseModtime(undefined), 0);
  });
});

describe("decodeTocSteps", () => {
  /** The TOC as the caller of decodeTocSteps sees it, and how many runs of entries it got. */
  const runs = (json: Uint8Array): [Toc, number] => {
    let sunk: Toc["entries"] = [];
    let n = 0;
    const steps = decodeTocSteps(json, (batch) => {
      sunk = sunk.concat(batch);
      n++;
    });
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value ? [r.value, 0] : [{ version: 1, entries: sunk }, n];
    }
  };
  const run = (json: Uint8Array): Toc => runs(json)[0];
  const entries = Array.from({ length: 1300 }, (_, i) => ({
    name: `d${i % 7}/f{${i}}"[\\]`,
    type: "reg" as const,
    size: i,
    xattrs: i % 100 === 0 ? { "user.a}": "e30=" } : undefined,
  }));
  const toc: Toc = { version: 1, entries: [{ name: "d0/", type: "dir" }, ...entries] };

  it("decodes what decodeToc decodes, laid out as Go or compactly, in several steps", () => {
    for (const json of [encodeToc(toc), enc(toc)]) {
      let steps = 0;
      const gen = decodeTocSteps(json, () => {});
      while (!gen.next().done) steps++;
      assert.ok(steps > 2, `${steps} steps`);
      const [got, batches] = runs(json);
      assert.equal(batches, 3, "1301 entries in runs of 512");
      assert.deepEqual(got, decodeToc(json));
    }
    assert.deepEqual(run(enc({ version: 1, entries: [] })), { version: 1, entries: [] });
  });

  it("refuses what decodeToc refuses, with its message, and reads odd layouts as it does", () => {
    const text = new TextDecoder().decode(enc(toc));
    const odd = [
      text.replace("}]}", "},]}"), // trailing comma
      text.replace("},{", "}{"), // missing comma
      text.replace("},{", "},,{"),
      text.replace('"entries":[', '"entries":["x",'),
      text.replace('"size":1299', '"size":-1'),
      text.slice(0, -3),
      text + "x",
      text.replace("}]}", '}],"entries":[]}'), // valid JSON: the last key wins
    ];
    const outcome = (f: () => Toc): unknown => {
      try {
        return f();
      } catch (err) {
        assert.ok(err instanceof TocError);
        return err.message;
      }
    };
    for (const b of odd) {
      const json = new TextEncoder().encode(b);
      assert.deepEqual(outcome(() => run(json)), outcome(() => decodeToc(json)), b.slice(-40));
    }
    assert.equal(typeof outcome(() => run(new TextEncoder().encode(odd[0]))), "string");
  });
});
