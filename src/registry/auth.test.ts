import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Authenticator, parseWwwAuthenticate } from "./auth.ts";

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

describe("Authenticator", () => {
  const jwt = (exp: number) =>
    `e30.${Buffer.from(JSON.stringify({ exp: Math.floor(exp / 1000) })).toString("base64url")}.s`;

  it("does not send a registry token past its JWT exp, and asks the keychain again", async () => {
    const expired = jwt(Date.now() - 60_000);
    const fresh = jwt(Date.now() + 3600_000);
    const tokens = [expired, fresh];
    const auth = new Authenticator(
      { get: () => Promise.resolve({ registryToken: tokens.shift() }) },
      () => Promise.reject(new Error("no token server call expected")),
    );
    const scopes = ["repository:app:pull"];
    await auth.unauthorized("r.io", scopes, 'Bearer realm="https://r.io/token"', undefined);
    assert.equal(await auth.authorization("r.io", scopes), `Bearer ${fresh}`);
    assert.deepEqual(tokens, []);
  });
});
