import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { Logger } from "../log/mod.ts";
import { METRICS, observeMs, observeUs, Operation } from "../metrics/mod.ts";
import { adminApp, metricsApp, serveApp, startAdmin, statusOf } from "./admin.ts";
import type { AdminSources } from "./admin.ts";
import { type Status, UNKNOWN_IMAGE } from "./_status.ts";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-admin-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const REF = "127.0.0.1:5000/app:esgz";
const sources: AdminSources = {
  daemon: () => ({
    version: "0.1.0 test",
    config: "/etc/containerd-stargz-grpc/config.toml",
    configFound: false,
    root: "/var/lib/containerd-stargz-grpc",
    address: "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock",
    pid: 42,
    startedAt: "2026-12-01T00:00:00.000Z",
  }),
  layers: () => [{
    mountpoint: "/m/1",
    ref: REF,
    digest: "sha256:aa",
    prefetchSize: 10,
    state: { digest: "sha256:aa", size: 100, fetchedSize: 40, fetchedPercent: 40, error: "boom" },
  }],
  fallbacks: () => [
    { target: "t1", ref: REF, digest: "sha256:bb", reason: "sha256:bb is not eStargz" },
    { target: "t2", ref: REF, digest: "sha256:aa", reason: "old failure, mounted since" },
    { target: "t3", reason: "no source labels (image reference and layer digest)" },
  ],
  cache: () => ({ memoryHits: 3, diskBytes: 4096, evictions: 2 }),
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

/**
 * The Go snapshotter's families (fs/metrics/common/metrics.go and fs/metrics/layer/layer.go,
 * go-metrics namespace `stargz_fs`, unit bytes): name → type and label names.
 */
const UPSTREAM: Record<string, { type: string; labels: string[] }> = {
  stargz_fs_operation_duration_milliseconds: {
    type: "histogram",
    labels: ["operation_type", "layer"],
  },
  stargz_fs_operation_duration_microseconds: {
    type: "histogram",
    labels: ["operation_type", "layer"],
  },
  stargz_fs_operation_count: { type: "counter", labels: ["operation_type", "layer"] },
  stargz_fs_bytes_served: { type: "gauge", labels: ["operation_type", "layer"] },
  stargz_fs_layer_fetched_size_bytes: { type: "counter", labels: ["digest", "mountpoint"] },
  stargz_fs_layer_prefetch_size_bytes: { type: "counter", labels: ["digest", "mountpoint"] },
  stargz_fs_layer_size_bytes: { type: "counter", labels: ["digest", "mountpoint"] },
};

describe("admin API", () => {
  it("groups layers by image: remote with progress, fallback with reason", () => {
    const s = statusOf(sources);
    assert.equal(s.daemon.config, "/etc/containerd-stargz-grpc/config.toml");
    assert.deepEqual(s.images.map((i) => i.ref), [UNKNOWN_IMAGE, REF].sort());
    const app = s.images.find((i) => i.ref === REF)!;
    assert.deepEqual(app.layers.map((l) => [l.digest, l.mode]), [
      ["sha256:bb", "fallback"],
      ["sha256:aa", "remote"],
    ]);
    assert.equal(app.layers[0].reason, "sha256:bb is not eStargz");
    assert.equal(app.layers[1].fetchedPercent, 40);
    assert.equal(app.layers[1].error, "boom");
  });

  it("answers JSON, the status page and Prometheus metrics", async () => {
    const app = adminApp(sources);
    assert.equal(await (await app.request("/healthz")).text(), "ok\n");
    const layers = await (await app.request("/v1/layers")).json() as {
      state: { fetchedPercent: number };
    }[];
    assert.equal(layers[0].state.fetchedPercent, 40);
    const status = await (await app.request("/v1/status")).json() as Status;
    assert.equal(status.restore.failed[0].error, "registry down");
    const page = await app.request("/");
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const html = await page.text();
    assert.match(html, /aria-valuenow="40\.0"/);
    assert.match(html, /sha256:bb is not eStargz/);
    assert.doesNotMatch(html, /<script|<link|src="http/, "self-contained");
    const metrics = await (await app.request("/metrics")).text();
    assert.match(metrics, /^stargz_layers_mounted 1$/m);
    assert.match(metrics, /^stargz_layer_fetched_bytes\{digest="sha256:aa"\} 40$/m);
    assert.match(metrics, /^stargz_layer_errors\{digest="sha256:aa"\} 1$/m);
    assert.match(metrics, /^stargz_cache_bytes\{tier="disk"\} 4096$/m);
    assert.match(metrics, /^stargz_cache_evictions_total 2$/m);
    assert.match(metrics, /^stargz_restore_failed 1$/m);
    assert.match(
      metrics,
      /^stargz_fs_layer_fetched_size_bytes\{digest="sha256:aa",mountpoint="\/m\/1"\} 40$/m,
    );
    assert.match(
      metrics,
      /^stargz_fs_layer_prefetch_size_bytes\{digest="sha256:aa",mountpoint="\/m\/1"\} 10$/m,
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

  it("keeps upstream's metric names, types, labels and buckets", async () => {
    observeMs(Operation.mount, "sha256:aa", performance.now() - 3);
    observeUs(Operation.readOnDemand, "sha256:aa", performance.now());
    METRICS.operationCount.add({ operation_type: Operation.onDemandReadAccessCount, layer: "x" });
    METRICS.bytesServed.add({ operation_type: Operation.onDemandBytesServed, layer: "x" }, 5);
    const text = await (await metricsApp(sources).request("/metrics")).text();
    for (const [name, want] of Object.entries(UPSTREAM)) {
      assert.match(text, new RegExp(`^# TYPE ${name} ${want.type}$`, "m"), name);
      const sample = new RegExp(`^${name}(?:_bucket|_sum|_count)?\\{([^}]*)\\} `, "m").exec(text);
      assert.ok(sample, `${name} has a sample`);
      const labels = sample[1].split(",").map((kv) => kv.split("=")[0]).filter((l) => l !== "le");
      assert.deepEqual(labels, want.labels, name);
    }
    assert.match(
      text,
      /^stargz_fs_operation_duration_milliseconds_bucket\{operation_type="mount",layer="sha256:aa",le="4"\} 1$/m,
    );
    assert.match(
      text,
      /^stargz_fs_operation_duration_milliseconds_bucket\{operation_type="mount",layer="sha256:aa",le="16384"\} 1$/m,
    );
    // Ours, by the names docs/operations.md lists.
    for (
      const name of [
        "stargz_fallback_total",
        "stargz_layer_fetched_bytes",
        "stargz_cache_bytes",
        "stargz_cache_evictions_total",
        "stargz_registry_requests_total",
        "stargz_registry_request_duration_seconds",
        "stargz_registry_request_errors_total",
        "stargz_restore_failed",
        "stargz_fuse_requests_in_flight",
      ]
    ) assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), name);
  });

  it("serves on a 0600 unix socket and on a loopback port", async () => {
    const sock = path.join(tmp, "admin.sock");
    const a = await startAdmin(sock, sources, new Logger());
    try {
      assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
      await assert.rejects(
        startAdmin(sock, sources, new Logger()),
        /another process is already serving on it/,
        "a live socket is not taken over",
      );
      const r = await getUnix(sock, "/v1/snapshots");
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), [{ key: "k", kind: "committed" }]);
    } finally {
      await a.close();
    }
    const b = await serveApp("127.0.0.1:0", metricsApp(sources), new Logger(), "metrics API");
    try {
      const res = await fetch(`${b.address}/metrics`);
      assert.match(await res.text(), /^# TYPE stargz_fs_operation_count counter$/m);
      assert.equal((await fetch(`${b.address}/v1/status`)).status, 404, "metrics only");
    } finally {
      await b.close();
    }
  });
});
