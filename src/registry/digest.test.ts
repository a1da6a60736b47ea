import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { type Digest, isDigest, parseDigest } from "./digest.ts";
import { RegistryClient } from "./client.ts";
import { InvalidDigestError, InvalidReferenceError } from "./errors.ts";
import { parseReference } from "./reference.ts";

const HEX64 = "0123456789abcdef".repeat(4);

describe("parseDigest", () => {
  it("accepts the registered algorithms with their exact hex length", () => {
    assert.equal(parseDigest(`sha256:${HEX64}`), `sha256:${HEX64}`);
    assert.ok(isDigest(`sha512:${HEX64}${HEX64}`));
  });

  it("refuses everything else with the reason", () => {
    for (
      const bad of [
        "",
        "../../../../etc/passwd",
        "sha256:abc?x=1#y",
        `sha256:${HEX64}\n`,
        `sha256:${HEX64.toUpperCase()}`,
        `sha256:${HEX64}0`,
        `sha384:${"a".repeat(96)}`,
        `multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8`,
        `sha512:${HEX64}`,
      ]
    ) {
      assert.equal(isDigest(bad), false, bad);
      assert.throws(() => parseDigest(bad), InvalidDigestError, bad);
    }
  });

  it("pins references to registered digests only", () => {
    assert.equal(parseReference(`r.io/a@sha256:${HEX64}`).digest, `sha256:${HEX64}`);
    assert.throws(
      () => parseReference(`r.io/a@md5:${"a".repeat(32)}`),
      InvalidReferenceError,
    );
  });
});

describe("RegistryClient", () => {
  it("builds no URL from a digest that does not parse, even one cast to Digest", async () => {
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.url ?? "");
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const client = new RegistryClient({ keychain: { get: () => Promise.resolve(undefined) } });
      for (const bad of ["../../../../etc/passwd", "sha256:abc?x=1#y", `sha256:${HEX64}\n`]) {
        const d = bad as Digest;
        await assert.rejects(client.openBlob(`${host}/app`, d), InvalidDigestError);
        await assert.rejects(client.fetchBlob(`${host}/app`, { digest: d }), InvalidDigestError);
        await assert.rejects(client.fetchBlobRange(`${host}/app`, d, 0, 1), InvalidDigestError);
        await assert.rejects(client.hasBlob(`${host}/app`, d), InvalidDigestError);
      }
      const pinned = { ...parseReference(`${host}/app`), tag: "../x" };
      await assert.rejects(client.getManifest(pinned), InvalidReferenceError);
      assert.deepEqual(seen, []);
    } finally {
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
