import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { Logger } from "../log/mod.ts";
import { adminApp, startAdmin } from "./admin.ts";
import type { AdminSources } from "./admin.ts";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-admin-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sources: AdminSources = {
  layers: () => [{
    mountpoint: "/m/1",
    digest: "sha256:aa",
    state: { digest: "sha256:aa", size: 100, fetchedSize: 40, fetchedPercent: 40, error: "boom" },
  }],
  cache: () => ({ memoryHits: 3, diskBytes: 4096 }),
  snapshots: () => Promise.resolve([{ key: "k", kind: "committed" }]),
  restore: () => ({
    pending: [],
    failed: [{ name: "sn", mountpoint: "/m/2", error: "registry down" }],
  }),
};

function getUnix(socketPath: string, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath, path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

describe("admin API", () => {
  it("answers JSON and Prometheus metrics", async () => {
    const app = adminApp(sources);
    assert.equal(await (await app.request("/healthz")).text(), "ok\n");
    const layers = await (await app.request("/v1/layers")).json();
    assert.equal(layers[0].state.fetchedPercent, 40);
    const metrics = await (await app.request("/metrics")).text();
    assert.match(metrics, /^stargz_layers_mounted 1$/m);
    assert.match(metrics, /^stargz_layer_fetched_bytes\{digest="sha256:aa"\} 40$/m);
    assert.match(metrics, /^stargz_layer_errors\{digest="sha256:aa"\} 1$/m);
    assert.match(metrics, /^stargz_cache_disk_bytes 4096$/m);
    assert.match(metrics, /^stargz_restore_failed 1$/m);
    assert.equal(
      (await (await app.request("/v1/restore")).json()).failed[0].error,
      "registry down",
    );
    assert.equal((await adminApp(sources, { metrics: false }).request("/metrics")).status, 404);
    assert.equal((await app.request("/nope")).status, 404);
  });

  it("refuses query parameters, which no route takes", async () => {
    const app = adminApp(sources);
    for (const url of ["/v1/layers?digest=../x", "/metrics?name[]=1", "/healthz?"]) {
      const res = await app.request(url);
      if (url.endsWith("?")) assert.equal(res.status, 200, url);
      else {
        assert.equal(res.status, 400, url);
        assert.match(((await res.json()) as { error: string }).error, /unknown query parameter/);
      }
    }
  });

  it("escapes label values in the metrics text", async () => {
    const hostile = `sha256:x"} 1\nstargz_fake{a="\\`;
    const app = adminApp({
      ...sources,
      layers: () => [{ ...sources.layers()[0], digest: hostile }],
    });
    const metrics = await (await app.request("/metrics")).text();
    assert.doesNotMatch(metrics, /^stargz_fake/m);
    assert.ok(metrics.includes(`{digest="sha256:x\\"} 1\\nstargz_fake{a=\\"\\\\"} 40`));
  });

  it("serves on a unix socket and on a loopback port", async () => {
    const sock = path.join(tmp, "admin.sock");
    const a = await startAdmin(sock, sources, new Logger());
    try {
      const r = await getUnix(sock, "/v1/snapshots");
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), [{ key: "k", kind: "committed" }]);
    } finally {
      await a.close();
    }
    const b = await startAdmin("127.0.0.1:0", sources, new Logger());
    try {
      const res = await fetch(`${b.address}/v1/cache`);
      assert.deepEqual(await res.json(), { memoryHits: 3, diskBytes: 4096 });
    } finally {
      await b.close();
    }
  });
});
