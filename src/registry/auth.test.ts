import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseWwwAuthenticate } from "./auth.ts";

describe("parseWwwAuthenticate", () => {
  it("parses a bearer challenge", () => {
    assert.deepEqual(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull"',
      ),
      [{
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:library/python:pull",
        },
      }],
    );
  });

  it("parses basic, escapes, tokens and several challenges", () => {
    assert.deepEqual(parseWwwAuthenticate('Basic realm="a \\"q\\" b"'), [
      { scheme: "basic", params: { realm: 'a "q" b' } },
    ]);
    assert.deepEqual(
      parseWwwAuthenticate('Basic realm="r", Bearer realm="https://t/x", error=insufficient_scope'),
      [
        { scheme: "basic", params: { realm: "r" } },
        { scheme: "bearer", params: { realm: "https://t/x", error: "insufficient_scope" } },
      ],
    );
    assert.deepEqual(parseWwwAuthenticate(""), []);
  });
});
