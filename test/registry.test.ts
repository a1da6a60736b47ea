/**
 * Registry client against a real `docker-registry` (anonymous): manifests and indexes, range
 * reads, pushes, and the registry quirks (redirects, 403, 400, 429/503, resets, hangs, mirrors)
 * reproduced by a fault-injecting proxy in front of it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setLogLevel, setLogSink } from "../src/log/mod.ts";
import {
  DigestMismatchError,
  MediaType,
  NotFoundError,
  parseDigest,
  RegistryClient,
  type RegistryClientOptions,
  RegistryError,
  TimeoutError,
} from "../src/registry/mod.ts";
import {
  closedPort,
  type FaultProxy,
  type PushedImage,
  pushImage,
  pushIndex,
  startFaultProxy,
  startRegistry,
  testBytes,
  type TestRegistry,
} from "./_registry.ts";

const BLOB_SIZE = 3 * 1024 * 1024 + 17;
const blobData = testBytes(BLOB_SIZE, 7);
const quiet = { maxRetries: 2, minWaitMsec: 10, maxWaitMsec: 200 };

let reg: TestRegistry;
let amd: PushedImage;
let arm: PushedImage;
const proxies: FaultProxy[] = [];

async function proxy(): Promise<FaultProxy> {
  const p = await startFaultProxy(reg.url);
  proxies.push(p);
  return p;
}

function client(opts: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({ keychain: { get: () => Promise.resolve(undefined) }, ...opts });
}

function isBlobGet(r: { method: string; url: string }): boolean {
  return r.method === "GET" && r.url.includes("/blobs/sha256:");
}

const logs: string[] = [];
let restoreSink: ((line: string) => void) | undefined;

before(async () => {
  restoreSink = setLogSink((line) => logs.push(line));
  reg = await startRegistry();
  amd = await pushImage(reg, "app", "amd", {
    layers: [{ data: blobData }, { data: testBytes(1000, 3) }],
  });
  arm = await pushImage(reg, "app", "arm", {
    layers: [{ data: testBytes(5000, 4) }],
    platform: { os: "linux", architecture: "arm64", variant: "v8" },
    docker: true,
  });
  await pushIndex(reg, "app", "multi", [
    { image: amd, platform: { os: "linux", architecture: "amd64" } },
    { image: arm, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
  ]);
  await pushIndex(reg, "app", "list", [
    { image: arm, platform: { os: "linux", architecture: "arm64" } },
  ], { docker: true });
});

after(async () => {
  if (restoreSink) setLogSink(restoreSink);
  for (const p of proxies) await p.stop();
  await reg?.stop();
});

describe("manifests", () => {
  it("resolves an OCI index to the requested platform's manifest and config", async () => {
    const c = client();
    const img = await c.resolve(`${reg.host}/app:multi`, {
      platform: { os: "linux", architecture: "arm64" },
    });
    assert.equal(img.mediaType, MediaType.ociIndex);
    assert.equal(img.manifestDigest, arm.manifestDigest);
    assert.equal(img.manifestMediaType, MediaType.dockerManifest);
    assert.deepEqual(img.platform, { os: "linux", architecture: "arm64", variant: "v8" });
    assert.equal(img.layers.length, 1);
    assert.equal(img.layers[0].digest, arm.layers[0].digest);
    assert.equal(img.config.architecture, "arm64");
    const amdImg = await c.resolve(`${reg.host}/app:multi`, {
      platform: { os: "linux", architecture: "amd64" },
    });
    assert.equal(amdImg.manifestDigest, amd.manifestDigest);
    assert.equal(amdImg.layers.length, 2);
  });

  it("resolves a Docker manifest list, a plain manifest and a digest reference", async () => {
    const c = client();
    const list = await c.resolve(`${reg.host}/app:list`, {
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
    });
    assert.equal(list.mediaType, MediaType.dockerManifestList);
    assert.equal(list.manifestDigest, arm.manifestDigest);
    const plain = await c.resolve(`${reg.host}/app:amd`);
    assert.equal(plain.mediaType, MediaType.ociManifest);
    assert.equal(plain.digest, amd.manifestDigest);
    assert.equal(plain.index, undefined);
    assert.deepEqual(plain.platform, { os: "linux", architecture: "amd64" });
    const pinned = await c.getManifest(`${reg.host}/app@${amd.manifestDigest}`);
    assert.equal(pinned.kind, "manifest");
    assert.equal(pinned.digest, amd.manifestDigest);
  });

  it("reports a missing platform, tag and repository as not found", async () => {
    const c = client();
    await assert.rejects(
      c.resolve(`${reg.host}/app:multi`, { platform: { os: "linux", architecture: "s390x" } }),
      (e: unknown) => e instanceof NotFoundError && /linux\/s390x/.test(e.message),
    );
    await assert.rejects(c.resolve(`${reg.host}/app:nope`), NotFoundError);
    await assert.rejects(c.resolve(`${reg.host}/nothing/here:v1`), NotFoundError);
  });

  it("refuses a manifest whose content does not match its digest", async () => {
    const p = await proxy();
    const forged = amd.manifest.replace('"schemaVersion":2', '"schemaVersion":2 ');
    p.rule = (r) =>
      r.url.includes("/manifests/")
        ? {
          kind: "status",
          status: 200,
          headers: { "content-type": MediaType.ociManifest },
          body: forged,
        }
        : { kind: "pass" };
    const c = client();
    await assert.rejects(
      c.getManifest(`${p.host}/app@${amd.manifestDigest}`),
      DigestMismatchError,
    );
  });
});

describe("whole blobs", () => {
  it("fetches and streams whole blobs through a redirect, verified against the digest", async () => {
    const storage = await proxy();
    const front = await proxy();
    front.rule = (r) =>
      isBlobGet(r) ? { kind: "redirect", location: `${storage.url}${r.url}` } : { kind: "pass" };
    const c = client();
    const small = await c.fetchBlob(`${front.host}/app`, amd.layers[1]);
    assert.equal(small.length, 1000);
    const chunks: Uint8Array[] = [];
    await c.copyBlob(`${front.host}/app`, amd.layers[0], {
      write: (chunk) => Promise.resolve(chunks.push(chunk)),
    });
    assert.ok(Buffer.concat(chunks).equals(blobData));
    assert.ok(storage.requests.filter(isBlobGet).length >= 2);
    const tail = await c.fetchBlobRange(`${front.host}/app`, amd.layers[0].digest, 100, 151);
    assert.ok(Buffer.from(tail).equals(blobData.subarray(100, 151)));

    storage.rule = () => ({ kind: "status", status: 200, body: "not the blob" });
    await assert.rejects(c.fetchBlob(`${front.host}/app`, amd.layers[1]), DigestMismatchError);
    await assert.rejects(
      c.copyBlob(`${front.host}/app`, amd.layers[0], { write: () => Promise.resolve() }),
      DigestMismatchError,
    );
  });
});

describe("range reads", () => {
  it("reads ranges of every size, at the start, middle and end", async () => {
    const blob = await client().openBlob(`${reg.host}/app`, amd.layers[0].digest);
    assert.equal(blob.size, BLOB_SIZE);
    const sizes = [0, 1, 2, 3, 100, 4095, 4096, 65_535, 65_536, 1_000_000, BLOB_SIZE];
    for (const n of sizes) {
      for (const off of [0, 12_345, BLOB_SIZE - n]) {
        if (off + n > BLOB_SIZE) continue;
        const got = await blob.read(off, n);
        assert.equal(got.length, n, `length of ${n}@${off}`);
        assert.ok(Buffer.from(got).equals(blobData.subarray(off, off + n)), `bytes ${n}@${off}`);
      }
    }
    await assert.rejects(blob.read(BLOB_SIZE - 10, 100), RangeError);
    await assert.rejects(blob.read(BLOB_SIZE + 5, 10), RangeError);
  });

  it("reads many ranges with one multi-range request", async () => {
    const p = await proxy();
    const blob = await client().openBlob(`${p.host}/app`, amd.layers[0].digest);
    const ranges: [number, number][] = [
      [2_000_000, 2_050_000],
      [0, 10],
      [5, 20], // overlaps the previous one
      [20, 30], // adjacent
      [BLOB_SIZE - 1, BLOB_SIZE],
      [1_000_000, 1_000_000], // empty
      [777_777, 900_000],
    ];
    const before = p.requests.length;
    const got = await blob.readRanges(ranges);
    const sent = p.requests.slice(before);
    assert.equal(sent.length, 1);
    assert.match(String(sent[0].headers.range), /^bytes=\d+-\d+(,\d+-\d+){3}$/);
    ranges.forEach(([s, e], i) => {
      assert.ok(Buffer.from(got[i]).equals(blobData.subarray(s, e)), `range ${i}`);
    });
  });

  it("rejects ranges outside the blob", async () => {
    const blob = await client().openBlob(`${reg.host}/app`, amd.layers[1].digest);
    await assert.rejects(blob.readRanges([[0, 1001]]), RangeError);
    await assert.rejects(blob.readRanges([[-1, 2]]), RangeError);
  });

  it("checks a blob and fails to open a missing one or one of the wrong size", async () => {
    const c = client({ blob: quiet });
    const blob = await c.openBlob(`${reg.host}/app`, amd.layers[1].digest, { size: 1000 });
    await blob.check();
    await blob.refresh();
    assert.equal(blob.size, 1000);
    await assert.rejects(
      c.openBlob(`${reg.host}/app`, parseDigest(`sha256:${"0".repeat(64)}`)),
      NotFoundError,
    );
    await assert.rejects(
      c.openBlob(`${reg.host}/app`, amd.layers[1].digest, { size: 999 }),
      /descriptor says 999/,
    );
  });

  it("falls back to HEAD-less sizing with a 2-byte read", async () => {
    const p = await proxy();
    p.rule = (r) => r.method === "HEAD" ? { kind: "status", status: 405 } : { kind: "pass" };
    const blob = await client().openBlob(`${p.host}/app`, amd.layers[0].digest);
    assert.equal(blob.size, BLOB_SIZE);
  });
});

describe("registry quirks", () => {
  it("resolves a redirect once, reuses it, and keeps mirror headers off the other host", async () => {
    const storage = await proxy();
    const front = await proxy();
    front.rule = (r) =>
      isBlobGet(r) ? { kind: "redirect", location: `${storage.url}${r.url}` } : { kind: "pass" };
    const c = client({
      hosts: {
        host: {
          "example.test": {
            mirrors: [{ host: front.host, insecure: true, header: { "x-mirror-secret": "m1" } }],
          },
        },
      },
    });
    const blob = await c.openBlob("example.test/app", amd.layers[0].digest);
    assert.equal(blob.url, `${storage.url}/v2/app/blobs/${amd.layers[0].digest}`);
    const frontGets = front.requests.filter(isBlobGet).length;
    assert.equal(frontGets, 1);
    for (let i = 0; i < 3; i++) {
      const got = await blob.read(i * 100_000, 50_000);
      assert.ok(Buffer.from(got).equals(blobData.subarray(i * 100_000, i * 100_000 + 50_000)));
    }
    assert.equal(front.requests.filter(isBlobGet).length, frontGets);
    assert.ok(front.requests.every((r) => r.headers["x-mirror-secret"] === "m1"));
    assert.ok(storage.requests.length >= 4);
    assert.ok(storage.requests.every((r) => r.headers["x-mirror-secret"] === undefined));
  });

  it("resolves the redirect again after valid_interval", async () => {
    const storage = await proxy();
    const front = await proxy();
    front.rule = (r) =>
      isBlobGet(r) ? { kind: "redirect", location: `${storage.url}${r.url}` } : { kind: "pass" };
    const blob = await client({ blob: { validIntervalSec: 0.2 } }).openBlob(
      `${front.host}/app`,
      amd.layers[0].digest,
    );
    await blob.read(0, 10);
    assert.equal(front.requests.filter(isBlobGet).length, 1);
    await new Promise((r) => setTimeout(r, 300));
    await blob.read(0, 10);
    assert.equal(front.requests.filter(isBlobGet).length, 2);
  });

  it("refreshes the redirected URL on 403", async () => {
    const storage = await proxy();
    const front = await proxy();
    let generation = 1;
    front.rule = (r) =>
      isBlobGet(r)
        ? { kind: "redirect", location: `${storage.url}/g${generation}${r.url}` }
        : { kind: "pass" };
    storage.rule = (r) => {
      const m = /^\/g(\d+)(\/.*)$/.exec(r.url);
      if (!m || Number(m[1]) !== generation) return { kind: "status", status: 403 };
      return { kind: "pass", path: m[2] };
    };
    const blob = await client().openBlob(`${front.host}/app`, amd.layers[0].digest);
    assert.match(blob.url, /\/g1\//);
    assert.ok(Buffer.from(await blob.read(10, 20)).equals(blobData.subarray(10, 30)));
    generation = 2;
    assert.ok(Buffer.from(await blob.read(40, 20)).equals(blobData.subarray(40, 60)));
    assert.match(blob.url, /\/g2\//);
    assert.equal(front.requests.filter(isBlobGet).length, 2);
    generation = 3;
    await blob.check();
    assert.match(blob.url, /\/g3\//);
  });

  it("switches a host to single ranges after a 400 on a multi-range request", async () => {
    const p = await proxy();
    p.rule = (r) =>
      String(r.headers.range ?? "").includes(",")
        ? { kind: "status", status: 400 }
        : { kind: "pass" };
    const blob = await client().openBlob(`${p.host}/app`, amd.layers[0].digest);
    const ranges: [number, number][] = [[0, 100], [5000, 6000], [BLOB_SIZE - 50, BLOB_SIZE]];
    for (let round = 0; round < 2; round++) {
      const got = await blob.readRanges(ranges);
      ranges.forEach(([s, e], i) => assert.ok(Buffer.from(got[i]).equals(blobData.subarray(s, e))));
    }
    const multi = p.requests.filter((r) => String(r.headers.range ?? "").includes(","));
    assert.equal(multi.length, 1, "the 400 is remembered for the host");
  });

  it("never sends multi-range requests with force_single_range_mode", async () => {
    const p = await proxy();
    const blob = await client({ blob: { forceSingleRangeMode: true } }).openBlob(
      `${p.host}/app`,
      amd.layers[0].digest,
    );
    const got = await blob.readRanges([[0, 10], [100, 110]]);
    assert.ok(Buffer.from(got[1]).equals(blobData.subarray(100, 110)));
    assert.ok(p.requests.every((r) => !String(r.headers.range ?? "").includes(",")));
  });

  it("accepts a full 200 or one coalesced 206 for a multi-range request", async () => {
    const ranges: [number, number][] = [[10, 20], [3000, 3100], [900_000, 900_500]];
    const full = await proxy();
    full.rule = () => ({ kind: "pass", headers: { range: undefined } });
    const b1 = await client().openBlob(`${full.host}/app`, amd.layers[0].digest);
    const got1 = await b1.readRanges(ranges);
    ranges.forEach(([s, e], i) => assert.ok(Buffer.from(got1[i]).equals(blobData.subarray(s, e))));
    assert.equal(full.requests.filter(isBlobGet).at(-1)?.status, 200);

    const coalesced = await proxy();
    coalesced.rule = (r) =>
      String(r.headers.range ?? "").includes(",")
        ? { kind: "pass", headers: { range: "bytes=0-999999" } }
        : { kind: "pass" };
    const b2 = await client().openBlob(`${coalesced.host}/app`, amd.layers[0].digest);
    const got2 = await b2.readRanges(ranges);
    ranges.forEach(([s, e], i) => assert.ok(Buffer.from(got2[i]).equals(blobData.subarray(s, e))));
    const last = coalesced.requests.filter(isBlobGet).at(-1)!;
    assert.equal(last.status, 206);
    assert.match(String(last.headers.range), /,/);
  });

  it("reuses keep-alive connections and limits concurrent requests per host", async () => {
    const p = await proxy();
    const blob = await client({ maxConcurrentRequestsPerHost: 3 }).openBlob(
      `${p.host}/app`,
      amd.layers[0].digest,
    );
    const before = p.connections;
    for (let i = 0; i < 30; i++) await blob.read(i * 50_000, 50_000);
    assert.ok(p.connections - before <= 2, `${p.connections - before} connections for 30 reads`);
    await Promise.all(
      Array.from({ length: 24 }, (_, i) => blob.read(i * 60_000, 60_000)),
    );
    assert.ok(p.maxInFlight <= 3, `max in flight ${p.maxInFlight}`);
    assert.ok(p.maxInFlight >= 2, `max in flight ${p.maxInFlight}`);
  });

  it("retries 429 and 503 honouring Retry-After, but not 501", async () => {
    const p = await proxy();
    const blob = await client({ blob: { ...quiet, maxRetries: 3 } }).openBlob(
      `${p.host}/app`,
      amd.layers[0].digest,
    );
    let faults = ["429", "503"];
    p.rule = (r) => {
      if (!isBlobGet(r) || faults.length === 0) return { kind: "pass" };
      const status = Number(faults.shift());
      return { kind: "status", status, headers: { "retry-after": "1" } };
    };
    const t0 = Date.now();
    const got = await blob.read(1000, 1000);
    assert.ok(Buffer.from(got).equals(blobData.subarray(1000, 2000)));
    assert.ok(Date.now() - t0 >= 1900, `waited ${Date.now() - t0} ms for two Retry-After: 1`);
    faults = ["501", "501"];
    const before = p.requests.length;
    await assert.rejects(
      blob.read(0, 10),
      (e: unknown) => e instanceof RegistryError && e.status === 501,
    );
    assert.equal(p.requests.length - before, 1);
  });

  it("retries a read past max_retries until fetching_timeout_sec, then names the last failure", async () => {
    const p = await proxy();
    const blob = await client({ blob: { ...quiet, fetchingTimeoutSec: 2 } }).openBlob(
      `${p.host}/app`,
      amd.layers[0].digest,
    );
    const before = p.requests.length;
    p.rule = (r) => isBlobGet(r) ? { kind: "status", status: 503 } : { kind: "pass" };
    await assert.rejects(
      blob.read(0, 10),
      (e: unknown) => e instanceof TimeoutError && /deadline exceeded.*HTTP 503/.test(e.message),
    );
    assert.ok(p.requests.length - before > quiet.maxRetries + 1, "kept retrying past max_retries");
  });

  it("keeps a read waiting through a registry outage and finishes it when the registry is back", async () => {
    const p = await proxy();
    const blob = await client({ blob: quiet }).openBlob(`${p.host}/app`, amd.layers[0].digest);
    await p.down();
    setLogLevel("debug");
    const read = blob.read(4096, 8192);
    const retried = () => logs.filter((l) => l.includes("registry: retrying")).length;
    const start = retried();
    // Many more refused connections than max_retries allows.
    while (retried() - start < 3 * (quiet.maxRetries + 1)) {
      await new Promise((r) => setTimeout(r, 20));
    }
    setLogLevel("info");
    await p.up();
    assert.ok(Buffer.from(await read).equals(blobData.subarray(4096, 4096 + 8192)));
  });

  it("gives up after max_retries on a persistent 503 outside reads", async () => {
    const p = await proxy();
    const c = client({ blob: quiet });
    p.rule = (r) =>
      r.url.includes("/manifests/") ? { kind: "status", status: 503 } : { kind: "pass" };
    await assert.rejects(
      c.getManifest(`${p.host}/app:amd`),
      (e: unknown) => e instanceof RegistryError && e.status === 503,
    );
    assert.equal(p.requests.filter((r) => r.url.includes("/manifests/")).length, 3);
  });

  it("lets a trickling body run past the per-request timeout while it makes progress", async () => {
    const p = await proxy();
    const c = client({ hosts: { requestTimeoutSec: 1 }, blob: { ...quiet, maxRetries: 0 } });
    const blob = await c.openBlob(`${p.host}/app`, amd.layers[0].digest);
    // 64 KiB in 4 KiB pieces every 150 ms: about 2.4 s, over twice the timeout.
    p.rule = (r) =>
      isBlobGet(r) ? { kind: "trickle", bytes: 4096, everyMs: 150 } : { kind: "pass" };
    const before = p.requests.length;
    const got = await blob.read(50_000, 64 << 10);
    assert.ok(Buffer.from(got).equals(blobData.subarray(50_000, 50_000 + (64 << 10))));
    assert.equal(p.requests.length - before, 1, "one request, never restarted");
  });

  it("retries a connection reset in the middle of the body", async () => {
    const p = await proxy();
    const blob = await client({ blob: quiet }).openBlob(`${p.host}/app`, amd.layers[0].digest);
    let resets = 1;
    p.rule = (r) => isBlobGet(r) && resets-- > 0 ? { kind: "reset-mid-body" } : { kind: "pass" };
    const before = p.requests.length;
    const got = await blob.read(100_000, 1_000_000);
    assert.ok(Buffer.from(got).equals(blobData.subarray(100_000, 1_100_000)));
    assert.equal(p.requests.length - before, 2);
  });

  it("times out on a registry that never answers", async () => {
    const p = await proxy();
    const c = client({
      hosts: { requestTimeoutSec: 1 },
      blob: { ...quiet, maxRetries: 1, fetchingTimeoutSec: 3 },
    });
    const blob = await c.openBlob(`${p.host}/app`, amd.layers[0].digest);
    p.rule = (r) => isBlobGet(r) ? { kind: "hang" } : { kind: "pass" };
    const before = p.requests.length;
    await assert.rejects(
      blob.read(0, 10),
      (e: unknown) => e instanceof TimeoutError && /no answer within 1000 ms/.test(e.message),
    );
    assert.ok(p.requests.length - before >= 2, "each attempt timed out and was retried");
    await assert.rejects(
      c.resolve(`${p.host}/app:amd`).then(() => {
        p.rule = () => ({ kind: "hang" });
        return c.getManifest(`${p.host}/app:amd`);
      }),
      TimeoutError,
    );
  });

  it("falls through a mirror that is down, and uses a mirror that works", async () => {
    const down = await closedPort();
    const up = await proxy();
    const c = client({
      blob: quiet,
      hosts: {
        host: {
          [reg.host]: {
            mirrors: [{ host: `127.0.0.1:${down}` }, { host: up.host }],
          },
        },
      },
    });
    const img = await c.resolve(`${reg.host}/app:amd`);
    assert.equal(img.manifestDigest, amd.manifestDigest);
    const blob = await c.openBlob(`${reg.host}/app`, amd.layers[1].digest);
    assert.equal(blob.url, `${up.url}/v2/app/blobs/${amd.layers[1].digest}`);
    assert.ok(up.requests.some((r) => r.url.includes("/manifests/amd")));

    const onlyDown = client({
      blob: quiet,
      hosts: { host: { [reg.host]: { mirrors: [{ host: `127.0.0.1:${down}` }] } } },
    });
    const b2 = await onlyDown.openBlob(`${reg.host}/app`, amd.layers[1].digest);
    assert.equal(b2.url, `${reg.url}/v2/app/blobs/${amd.layers[1].digest}`);
  });
});

describe("push", () => {
  it("uploads monolithic and chunked blobs, mounts across repositories, puts manifests", async () => {
    const c = client();
    const target = `${reg.host}/pushed/app:v1`;
    const layer = testBytes(300_000, 11);
    const chunked = await c.pushBlob(target, layer, { chunkSize: 64 * 1024 });
    assert.equal(chunked.size, layer.length);
    const again = await c.pushBlob(target, layer);
    assert.equal(again.digest, chunked.digest);
    const cfgBytes = new TextEncoder().encode(
      JSON.stringify({
        os: "linux",
        architecture: "amd64",
        rootfs: { type: "layers", diff_ids: [] },
      }),
    );
    const cfg = await c.pushBlob(target, cfgBytes, { mediaType: MediaType.ociConfig });
    const p = await proxy();
    const mounted = await c.pushBlob(`${p.host}/other/app`, layer, { mountFrom: "pushed/app" });
    assert.equal(mounted.digest, chunked.digest);
    assert.ok(await c.hasBlob(`${reg.host}/other/app`, chunked.digest));
    const mountReq = p.requests.find((r) => r.method === "POST" && r.url.includes("mount="));
    assert.equal(mountReq?.status, 201, "mounted, not uploaded");
    assert.ok(!p.requests.some((r) => r.method === "PUT" || r.method === "PATCH"));
    const manifest = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: cfg,
      layers: [{ ...chunked, mediaType: MediaType.ociLayerGzip }],
    }));
    const m = await c.pushManifest(target, manifest, MediaType.ociManifest);
    const index = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [{ ...m, platform: { os: "linux", architecture: "amd64" } }],
    }));
    await c.pushManifest(`${reg.host}/pushed/app:idx`, index, MediaType.ociIndex);
    const img = await c.resolve(`${reg.host}/pushed/app:idx`, {
      platform: { os: "linux", architecture: "amd64" },
    });
    assert.equal(img.manifestDigest, m.digest);
    const blob = await c.openBlob(`${reg.host}/pushed/app`, chunked.digest);
    assert.ok(Buffer.from(await blob.read(0, layer.length)).equals(layer));
    const whole = await c.fetchBlob(`${reg.host}/other/app`, chunked);
    assert.equal(whole.length, layer.length);
  });
});
