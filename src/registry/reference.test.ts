import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidReferenceError } from "./errors.ts";
import { formatReference, parseReference } from "./reference.ts";

describe("parseReference", () => {
  const cases: [string, string][] = [
    ["python", "docker.io/library/python:latest"],
    ["python:3.12", "docker.io/library/python:3.12"],
    ["user/app", "docker.io/user/app:latest"],
    ["docker.io/python", "docker.io/library/python:latest"],
    ["index.docker.io/library/python:3", "docker.io/library/python:3"],
    ["ghcr.io/org/team/app:v1.2", "ghcr.io/org/team/app:v1.2"],
    ["localhost/app", "localhost/app:latest"],
    ["localhost:5000/app:esgz", "localhost:5000/app:esgz"],
    ["127.0.0.1:15000/a/b_c.d-e:t", "127.0.0.1:15000/a/b_c.d-e:t"],
    ["[::1]:5000/app:tag", "[::1]:5000/app:tag"],
    ["[::1]/app", "[::1]/app:latest"],
    ["localhost:5000", "docker.io/library/localhost:5000"],
    [`app@sha256:${"a".repeat(64)}`, `docker.io/library/app@sha256:${"a".repeat(64)}`],
    [`h.io/app:t@sha256:${"b".repeat(64)}`, `h.io/app:t@sha256:${"b".repeat(64)}`],
  ];
  for (const [input, want] of cases) {
    it(`normalises ${input}`, () => {
      assert.equal(formatReference(parseReference(input)), want);
    });
  }

  it("splits the parts", () => {
    const r = parseReference(`[::1]:5000/ns/app:v1@sha256:${"c".repeat(64)}`);
    assert.deepEqual(r, {
      domain: "[::1]:5000",
      repository: "ns/app",
      tag: "v1",
      digest: `sha256:${"c".repeat(64)}`,
    });
  });

  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["Docker.io/App", /lowercase/],
    ["docker.io/App", /lowercase/],
    ["app:bad tag", /whitespace/],
    ["app:-tag", /tag/],
    ["app@sha256:abc", /digest/],
    [`app@sha256:${"g".repeat(64)}`, /digest/],
    ["host:99999/app", /registry host/],
    ["a//b", /repository/],
    ["app/", /repository/],
    ["ghcr.io/", /missing repository/],
    ["[::1/app", /registry host/],
    [`h.io/${"a".repeat(260)}`, /too long/],
  ];
  for (const [input, why] of bad) {
    it(`rejects ${JSON.stringify(input)}`, () => {
      assert.throws(() => parseReference(input), (e: unknown) => {
        assert.ok(e instanceof InvalidReferenceError);
        assert.match(e.message, why);
        return true;
      });
    });
  }
});
