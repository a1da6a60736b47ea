import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { matchImage, parseGoDuration } from "./credential_provider.ts";

describe("credential provider rules", () => {
  it("matches images as kubelet's matchImages does", () => {
    assert.ok(matchImage("*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.eu-west-1.amazonaws.com/app"));
    assert.ok(!matchImage("*.example.io", "example.io/app"), "* is one segment");
    assert.ok(!matchImage("*.example.io", "a.b.example.io/app"));
    assert.ok(matchImage("example.io", "example.io:5000/app"), "no port in the pattern: any");
    assert.ok(!matchImage("example.io:5001", "example.io:5000/app"));
    assert.ok(matchImage("https://example.io/team", "example.io/team/app"), "path prefix");
    assert.ok(!matchImage("example.io/team", "example.io/other/app"));
  });

  it("reads Go durations", () => {
    assert.equal(parseGoDuration("12h"), 12 * 3600e3);
    assert.equal(parseGoDuration("1h30m"), 90 * 60e3);
    assert.equal(parseGoDuration("500ms"), 500);
    assert.equal(parseGoDuration("0"), 0);
    assert.equal(parseGoDuration("12"), undefined);
    assert.equal(parseGoDuration(""), undefined);
  });
});
