import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isLocalhost, registryHosts } from "./hosts.ts";

describe("registryHosts", () => {
  it("maps docker.io to registry-1.docker.io over https", () => {
    const [h] = registryHosts("docker.io");
    assert.equal(h.host, "registry-1.docker.io");
    assert.equal(h.scheme, "https");
    assert.equal(h.path, "/v2");
    assert.equal(h.timeoutMs, 30_000);
    assert.equal(h.isMirror, false);
  });

  it("uses plain http for localhost, 127.0.0.0/8 and ::1", () => {
    for (const d of ["localhost", "localhost:5000", "127.0.0.1:15000", "127.9.8.7", "[::1]:5000"]) {
      assert.equal(registryHosts(d)[0].scheme, "http", d);
    }
    for (const d of ["128.0.0.1", "localhost.example.com", "ghcr.io", "127.0.0.256"]) {
      assert.equal(registryHosts(d)[0].scheme, "https", d);
    }
    assert.equal(isLocalhost("[::1]"), true);
  });

  it("puts mirrors first with their own settings, then the origin", () => {
    const hosts = registryHosts("docker.io", {
      requestTimeoutSec: 10,
      host: {
        "docker.io": {
          mirrors: [
            {
              host: "mirror.local:5000",
              insecure: true,
              requestTimeoutSec: 3,
              header: { "X-A": "1" },
            },
            {
              host: "https://m2.example.com/prefix/",
              requestTimeoutSec: -1,
              header: { b: ["x", "y"] },
            },
          ],
        },
      },
    });
    assert.deepEqual(hosts.map((h) => [h.host, h.scheme, h.path, h.timeoutMs, h.isMirror]), [
      ["mirror.local:5000", "http", "/v2", 3000, true],
      ["m2.example.com", "https", "/prefix/v2", 0, true],
      ["registry-1.docker.io", "https", "/v2", 10_000, false],
    ]);
    assert.deepEqual(hosts[0].headers, { "x-a": "1" });
    assert.deepEqual(hosts[1].headers, { b: "x, y" });
    assert.deepEqual(hosts[2].headers, {});
  });

  it("ignores mirrors of other registries", () => {
    const hosts = registryHosts("ghcr.io", { host: { "docker.io": { mirrors: [{ host: "m" }] } } });
    assert.equal(hosts.length, 1);
  });
});
