import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "./errors.ts";
import { type FieldLookup, parseFilters } from "./filter.ts";

const fields: Record<string, string> = {
  name: "sha256:abc",
  kind: "committed",
  parent: "",
  "labels.containerd.io/snapshot.ref": "chain 1",
  "labels.a": "x,y",
};
const lookup: FieldLookup = (fp) => fields[fp.join(".")];
const matches = (...filters: string[]): boolean => parseFilters(filters).match(lookup);

describe("containerd filter syntax", () => {
  it("matches everything without filters or with an empty one", () => {
    assert.equal(matches(), true);
    assert.equal(matches(""), true);
    assert.equal(matches("name==nope", ""), true);
  });

  it("compares fields with ==, != and presence, all selectors joined by AND", () => {
    assert.equal(matches("kind==committed"), true);
    assert.equal(matches("kind!=committed"), false);
    assert.equal(matches("kind==committed,name==nope"), false);
    assert.equal(matches("name==nope", "kind==committed"), true, "filters are ORed");
    assert.equal(matches("labels.a"), true);
    assert.equal(matches("labels.b"), false);
    assert.equal(matches("parent"), true, "an empty parent is present");
    assert.equal(matches(" kind == committed "), true, "spaces around tokens are ignored");
  });

  it("reads quoted fields and values with Go escapes", () => {
    assert.equal(matches(`labels."containerd.io/snapshot.ref"=="chain 1"`), true);
    assert.equal(matches(`labels."containerd.io/snapshot.ref"=="chain\\x201"`), true);
    assert.equal(matches(`labels."containerd.io/snapshot.ref"=="chain\\u00201",parent==""`), true);
    assert.equal(matches(`labels.a=="x,y"`), true);
    assert.equal(matches(`labels.a==x`), false);
  });

  it("matches regular expressions, also in /…/ and |…| quotes", () => {
    assert.equal(matches("name~=^sha256:"), true);
    assert.equal(matches("name~=/^sha256:a.c$/"), true);
    assert.equal(matches("name~=|b|"), true);
    assert.equal(matches("name~=^abc"), false);
    assert.equal(matches("labels.b~=."), false, "an absent field never matches a pattern");
  });

  it("rejects malformed filters as invalid arguments", () => {
    for (const bad of ["name==", "name=x", "==x", "name==x,", `name=="x`, "name~=(", "a..b"]) {
      assert.throws(() => parseFilters([bad]), InvalidArgumentError, bad);
    }
  });
});
