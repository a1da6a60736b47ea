import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { bool, formatFlags, int, parseFlags, str, strs, UsageError } from "./_flags.ts";
import type { FlagSpec } from "./_flags.ts";

const specs: FlagSpec[] = [
  { name: "address", kind: "string", default: "/run/x.sock", help: "socket" },
  { name: "debug", kind: "bool", help: "debug" },
  { name: "level", kind: "int", default: 9, help: "level" },
  { name: "file", kind: "strings", help: "files" },
];

describe("parseFlags", () => {
  it("keeps defaults when nothing is given", () => {
    const p = parseFlags([], specs);
    assert.equal(str(p, "address"), "/run/x.sock");
    assert.equal(int(p, "level"), 9);
    assert.equal(bool(p, "debug"), false);
    assert.deepEqual(strs(p, "file"), []);
    assert.equal(p.given.size, 0);
  });

  it("accepts Go's single-dash and GNU double-dash spellings", () => {
    for (
      const args of [["-address", "/a"], ["--address", "/a"], ["-address=/a"], ["--address=/a"]]
    ) {
      const p = parseFlags(args, specs);
      assert.equal(str(p, "address"), "/a", args.join(" "));
      assert.ok(p.given.has("address"));
    }
  });

  it("parses booleans with and without values", () => {
    assert.equal(bool(parseFlags(["-debug"], specs), "debug"), true);
    assert.equal(bool(parseFlags(["--debug=false"], specs), "debug"), false);
    assert.equal(bool(parseFlags(["--debug=1"], specs), "debug"), true);
    assert.throws(() => parseFlags(["--debug=maybe"], specs), UsageError);
  });

  it("collects positional arguments around flags and after --", () => {
    const p = parseFlags(["in", "--level", "3", "out", "--", "--debug"], specs);
    assert.deepEqual(p.positional, ["in", "out", "--debug"]);
    assert.equal(int(p, "level"), 3);
    assert.equal(bool(p, "debug"), false);
  });

  it("repeats list flags", () => {
    assert.deepEqual(strs(parseFlags(["--file", "a", "-file=b"], specs), "file"), ["a", "b"]);
  });

  it("rejects unknown flags, missing values and bad integers with Go's wording", () => {
    assert.throws(
      () => parseFlags(["--adress", "/a"], specs),
      /flag provided but not defined: -adress/,
    );
    assert.throws(() => parseFlags(["--address"], specs), /flag needs an argument: -address/);
    assert.throws(
      () => parseFlags(["--level", "x"], specs),
      /invalid integer value "x" for flag -level/,
    );
  });

  it("formats help with defaults", () => {
    const text = formatFlags(specs);
    assert.match(text, /--address string\n {8}socket \(default "\/run\/x.sock"\)/);
    assert.match(text, /--debug\n {8}debug$/m);
  });
});
