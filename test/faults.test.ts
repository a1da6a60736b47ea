/**
 * Faults while containers run: a real containerd 1.6 with our daemon as its `stargz` snapshotter,
 * busybox containers (runc) reading lazily pulled files while the registry in front of them goes
 * down, trickles, expires its tokens or loses a blob, and while the cache disk is full.
 *
 * Containers report each read to a bind-mounted control directory (`/ctl/log`) and take each
 * step when the test writes a line to one of its FIFOs (`/ctl/ticks`: read the next file;
 * `/ctl/down`: the outage began), so every step waits for what it needs: a number of reads, a
 * number of retries in the daemon's log, a line in the log — never for time.
 * Prefetch only of the files a layer puts before its `.prefetch.landmark`, no background fetch and
 * `[blob] chunk_size = 1` (no read ahead): any other file is uncached until a container reads it.
 *
 * `FAULTS_LOG=/path` keeps the daemon's log there after the run.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupDir, startContainerd, startStargz, waitUntil } from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import { estargzLayer, makeBusyboxRoot, patternBytes, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { startFaultProxy, startRegistry } from "./_registry.ts";
import type { FaultProxy, TestRegistry } from "./_registry.ts";

/** Longer than the outage the first test rides out, short enough to be waited out. */
const FETCHING_TIMEOUT_SEC = 15;
/** Retries the first outage lasts: far past max_retries, about 8-11 s with the backoff cap. */
const OUTAGE_RETRIES = 9;
/** The cache disk: room for the busybox layer, not for every scenario's files. */
const CACHE_DISK = "4m";

let dir: string;
let reg: TestRegistry;
let tokenReg: TestRegistry;
let proxy: FaultProxy;
let daemon: StargzProcess;
let ctd: Containerd;
let busybox: BuiltLayer;
let cacheDir: string;
let layerCount = 0;

function adminGet(p: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: path.join(dir, "admin.sock"), path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(JSON.parse(body)));
    }).on("error", reject);
  });
}

/**
 * An eStargz layer holding `files` (path → content); `prefetch` names the files placed before
 * `.prefetch.landmark` (prefetched at mount), otherwise nothing is prefetched.
 */
async function dataLayer(
  files: Record<string, Uint8Array>,
  prefetch: string[] = [],
): Promise<BuiltLayer> {
  const root = path.join(dir, `layer${layerCount++}`);
  for (const [name, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), data);
  }
  tarDir(root, `${root}.tar`);
  return await estargzLayer(`${root}.tar`, { prioritizedFiles: prefetch });
}

/** `count` incompressible files `<prefix>/<n>` (n zero-padded to 3) of `size` bytes. */
function files(prefix: string, count: number, size: number, seed: number) {
  const out: Record<string, Uint8Array> = {};
  for (let i = 0; i < count; i++) {
    out[`${prefix}/${String(i).padStart(3, "0")}`] = patternBytes(size, seed * 1000 + i + 1);
  }
  return out;
}

const sha256 = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");

/** A container's control directory, bind-mounted at /ctl. */
class Control {
  readonly dir = path.join(dir, `ctl-${randomUUID().slice(0, 8)}`);
  /** Write ends of the FIFOs the container blocks on (opened read-write: never blocks here). */
  readonly #fifos = new Map<"ticks" | "down", number>();
  #ticks = 0;
  constructor() {
    fs.mkdirSync(this.dir);
    fs.writeFileSync(this.log, "");
    for (const name of ["ticks", "down"] as const) {
      const p = path.join(this.dir, name);
      execFileSync("mkfifo", [p]);
      this.#fifos.set(name, fs.openSync(p, fs.constants.O_RDWR));
    }
  }
  get log(): string {
    return path.join(this.dir, "log");
  }
  lines(): string[] {
    return fs.readFileSync(this.log, "utf8").split("\n").filter(Boolean);
  }
  count(re: RegExp): number {
    return this.lines().filter((l) => re.test(l)).length;
  }
  /** Tells the container the outage began, or its read loop to end. */
  mark(name: "down" | "stop"): void {
    if (name === "down") fs.writeSync(this.#fifos.get("down")!, "down\n");
    else fs.writeSync(this.#fifos.get("ticks")!, "stop\n");
  }
  /** Lets the read loop read one more file. */
  tick(): void {
    fs.writeSync(this.#fifos.get("ticks")!, "go\n");
    this.#ticks++;
  }
  /** The reads the loop `tag` has reported, ok or failed. */
  reported(tag: string): number {
    return this.count(new RegExp(`^${tag} (ok|FAIL) `));
  }
  /**
   * Steps the read loop `tag` one file at a time, each step once the last read reported, until
   * `done()`; then no read of the loop is in flight.
   */
  async stepUntil(tag: string, done: () => boolean, what: string): Promise<void> {
    await waitUntil(
      () => {
        if (done()) return true;
        if (this.reported(tag) >= this.#ticks) this.tick();
        return false;
      },
      120_000,
      what,
    );
  }
  read(name: string): string {
    return fs.readFileSync(path.join(this.dir, name), "utf8");
  }
  close(): void {
    for (const fd of this.#fifos.values()) fs.closeSync(fd);
  }
}

/** Runs `script` in a container of `ref` with `ctl` at /ctl; resolves with its stdout. */
function run(ref: string, script: string, ctl?: Control): Promise<string> {
  return ctd.ctrOk([
    "run",
    "--rm",
    "--snapshotter",
    "stargz",
    ...(ctl ? ["--mount", `type=bind,src=${ctl.dir},dst=/ctl,options=rbind:rw`] : []),
    ref,
    `faults-${randomUUID().slice(0, 8)}`,
    "/bin/sh",
    "-c",
    script,
  ], { namespace: "k8s.io", timeoutMs: 180_000 });
}

/**
 * Shell: reads `/<dir>/NNN` from `from` on, one for each `go` line on /ctl/ticks, logging
 * `<tag> ok|FAIL n` to /ctl/log, until a `stop` line (or `count` files).
 */
function readLoop(tag: string, dirName: string, from: number, count: number): string {
  return `i=${from}; while [ $i -lt ${count} ] && read t <&3 && [ "$t" = go ]; do ` +
    `f=/${dirName}/$(printf %03d $i); ` +
    `if cat $f > /dev/null; then echo "${tag} ok $i" >> /ctl/log; ` +
    `else echo "${tag} FAIL $i" >> /ctl/log; fi; i=$((i+1)); done 3< /ctl/ticks`;
}

/** Lines of the daemon's log added since `mark` that match `re`. */
function logLinesSince(mark: number, re: RegExp): string[] {
  return daemon.logs().slice(mark).split("\n").filter((l) => re.test(l));
}

/** Pushes an image of busybox plus `layers` and pulls it through CRI via `host`. */
async function pulled(
  name: string,
  layers: BuiltLayer[],
  via: { registry: TestRegistry; host: string } = { registry: reg, host: proxy.host },
): Promise<string> {
  await pushLayers(via.registry, `faults/${name}`, "v1", [busybox, ...layers]);
  const ref = `${via.host}/faults/${name}:v1`;
  await criPull(ctd.address, ref);
  return ref;
}

/** Waits for the daemon's "prefetched" line of the layer `digest`. */
function prefetched(digest: string): Promise<void> {
  return waitUntil(
    () => logLinesSince(0, /"msg":"prefetched"/).some((l) => l.includes(digest)),
    60_000,
    `prefetch of ${digest}`,
  );
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-faults-"));
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  tarDir(root, path.join(dir, "busybox.tar"));
  busybox = await estargzLayer(path.join(dir, "busybox.tar"));
  reg = await startRegistry();
  tokenReg = await startRegistry({ auth: "token" });
  proxy = await startFaultProxy(reg.url);
  const stargzRoot = path.join(dir, "stargz-root");
  cacheDir = path.join(stargzRoot, "cache");
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${CACHE_DISK},mode=0700`, "tmpfs", cacheDir]);
  fs.writeFileSync(
    path.join(dir, "config.toml"),
    [
      "no_background_fetch = true",
      "[blob]",
      "chunk_size = 1",
      // Upstream gives up after max_retries; with 2 a read would fail within a second, and so
      // would the kernel's own re-reads of the page: the outage test fails without the fix.
      "max_retries = 2",
      `fetching_timeout_sec = ${FETCHING_TIMEOUT_SEC}`,
      "[resolver]",
      // Shorter than one trickled file takes: only progress keeps the request alive.
      "request_timeout_sec = 1",
      "[admin]",
      `address = "${path.join(dir, "admin.sock")}"`,
      "",
    ].join("\n"),
  );
  daemon = await startStargz({
    dir,
    root: stargzRoot,
    args: ["--config", path.join(dir, "config.toml")],
  });
  ctd = await startContainerd({ dir, snapshotterAddress: daemon.address });
});

after(async () => {
  if (process.env.FAULTS_LOG) fs.writeFileSync(process.env.FAULTS_LOG, daemon?.logs() ?? "");
  await ctd?.stop();
  await daemon?.stop();
  await proxy?.stop();
  await reg?.stop();
  await tokenReg?.stop();
  await cleanupDir(dir);
});

describe("faults while containers run", () => {
  it("rides out a registry outage: cached files keep reading, an uncached read waits and succeeds", async () => {
    const cached = files("c", 20, 4096, 1);
    const layer = await dataLayer({ ...cached, ...files("f", 200, 4096, 2) }, Object.keys(cached));
    const ref = await pulled("outage", [layer]);
    const digest = pushedDigest(layer);
    await prefetched(digest);
    const ctl = new Control();
    const cachedReads = Object.keys(cached).map((p) =>
      `if cat /${p} > /dev/null; then echo "c ok ${p}" >> /ctl/log; ` +
      `else echo "c FAIL ${p}" >> /ctl/log; fi`
    ).join("; ");
    const script = `(${readLoop("f", "f", 10, 200)}) & ` +
      `read d < /ctl/down; ${cachedReads}; wait`;
    const container = run(ref, script, ctl);
    await ctl.stepUntil("f", () => ctl.count(/^f ok/) >= 3, "reads before the outage");
    const mark = daemon.logs().length;
    await proxy.down();
    ctl.mark("down");
    // One uncached read during the outage: it must wait, not fail.
    ctl.tick();
    await waitUntil(
      () =>
        ctl.count(/^c /) === 20 &&
        logLinesSince(mark, /registry: retrying/).length >= OUTAGE_RETRIES,
      120_000,
      "cached reads and retries during the outage",
    );
    const okBefore = ctl.count(/^f ok/);
    await proxy.up();
    await ctl.stepUntil("f", () => ctl.count(/^f ok/) >= okBefore + 3, "reads after the outage");
    ctl.mark("stop");
    await container;
    ctl.close();
    const lines = ctl.lines();
    assert.deepEqual(lines.filter((l) => l.includes("FAIL")), [], lines.join("\n"));
    assert.equal(ctl.count(/^c ok/), 20);
    assert.ok(logLinesSince(mark, /retrying until the read's deadline/).length >= 1);
  });

  it("fails a read with EIO only when the outage outlasts fetching_timeout_sec, and says why", async () => {
    const layer = await dataLayer(files("f", 200, 4096, 3));
    const digest = pushedDigest(layer);
    const ref = await pulled("long-outage", [layer]);
    const ctl = new Control();
    const script = `${readLoop("f", "f", 30, 200)}; ` +
      `cat /.stargz-snapshotter/${digest}.json > /ctl/state; ` +
      `cat /.stargz-snapshotter/${pushedDigest(busybox)}.json > /ctl/busybox-state`;
    const container = run(ref, script, ctl);
    await ctl.stepUntil("f", () => ctl.count(/^f ok/) >= 2, "reads before the outage");
    const mark = daemon.logs().length;
    await proxy.down();
    ctl.tick();
    // The kernel asks again after a failed read-ahead (a synchronous read of the page, which
    // itself may be retried once): the container sees EIO when the last of these requests
    // reaches its deadline too, which only the container can tell.
    await waitUntil(
      () => ctl.count(/FAIL/) > 0,
      4 * FETCHING_TIMEOUT_SEC * 1000 + 60_000,
      "a read to fail in the container",
    );
    assert.ok(
      logLinesSince(mark, /"msg":"layer error"/).some((l) => l.includes(digest)),
      "the daemon logged the failed read",
    );
    await proxy.up();
    const okAfterFailure = () => {
      const lines = ctl.lines();
      const first = lines.findIndex((l) => l.includes("FAIL"));
      return first < 0 ? 0 : lines.slice(first).filter((l) => / ok /.test(l)).length;
    };
    await ctl.stepUntil("f", () => okAfterFailure() >= 2, "reads after the outage").catch((e) => {
      throw new Error(`${e.message}: ${ctl.lines().join(", ")}`);
    });
    ctl.mark("stop");
    await container;
    ctl.close();
    const lines = ctl.lines();
    const failed = lines.filter((l) => l.includes("FAIL"));
    assert.equal(failed.length, 1, `one read outlived the deadline:\n${lines.join("\n")}`);
    const state = JSON.parse(ctl.read("state"));
    assert.match(state.error, /deadline exceeded after \d+ attempts.*connection failed/);
    assert.equal(JSON.parse(ctl.read("busybox-state")).error, undefined, "other layers unaffected");
  });

  it("serves reads from a registry that trickles, past the per-request timeout", async () => {
    const slowFiles = files("s", 3, 256 << 10, 4);
    const layer = await dataLayer(slowFiles);
    const digest = pushedDigest(layer);
    const ref = await pulled("slow", [layer]);
    // 16 KiB every 100 ms: a 256 KiB file takes about 1.6 s, request_timeout_sec is 1.
    proxy.rule = (r) =>
      r.url.includes(`/blobs/${digest}`)
        ? { kind: "trickle", bytes: 16 << 10, everyMs: 100 }
        : { kind: "pass" };
    const before = proxy.requests.length;
    try {
      const out = await run(ref, "sha256sum /s/001 /s/002");
      assert.equal(
        out,
        `${sha256(slowFiles["s/001"])}  /s/001\n${sha256(slowFiles["s/002"])}  /s/002\n`,
      );
    } finally {
      proxy.rule = () => ({ kind: "pass" });
    }
    const slowGets = proxy.requests.slice(before).filter((r) => r.url.includes(digest));
    // Read-ahead of the next file may still be trickling in: a request the timeout cut would
    // never finish, so wait for all of them to end before judging.
    await waitUntil(
      () => slowGets.every((r) => r.status !== undefined),
      60_000,
      "trickled requests finish",
    );
    assert.ok(slowGets.length >= 2, "the files came through the trickling proxy");
    assert.ok(slowGets.every((r) => r.status === 206), JSON.stringify(slowGets));
  });

  it("re-authenticates when the registry's token expires mid-run, and no read fails", async () => {
    const ts = tokenReg.tokenServer!;
    const authFiles = files("a", 5, 4096, 5);
    const layer = await dataLayer(authFiles);
    // Tokens valid for about 5 s at the registry (60 s clock skew allowed) but announced as
    // an hour: only a 401 can tell the daemon that its cached token expired.
    ts.jwtTtlSec = -55;
    ts.advertisedTtlSec = 3600;
    let ref: string;
    let probe: string;
    try {
      ref = await pulled("auth", [layer], { registry: tokenReg, host: tokenReg.host });
      probe = (await tokenReg.authorization("faults/auth"))!;
    } finally {
      ts.jwtTtlSec = 300;
    }
    // A token issued after the daemon's: once it is refused, the daemon's is too.
    await waitUntil(
      async () => {
        const res = await fetch(`${tokenReg.url}/v2/faults/auth/manifests/v1`, {
          method: "HEAD",
          headers: { authorization: probe },
        });
        await res.body?.cancel();
        return res.status === 401;
      },
      60_000,
      "the token to expire",
    );
    const issued = ts.requests.length;
    const mark = daemon.logs().length;
    const out = await run(ref, "sha256sum /a/000 /a/004");
    assert.equal(
      out,
      `${sha256(authFiles["a/000"])}  /a/000\n${sha256(authFiles["a/004"])}  /a/004\n`,
    );
    assert.ok(ts.requests.length > issued, "a new token was fetched");
    assert.deepEqual(logLinesSince(mark, /"msg":"layer error"/), []);
    ts.advertisedTtlSec = 300;
  });

  it("fails reads of a blob deleted after the mount with EIO and the reason, other layers unaffected", async () => {
    const goneFiles = files("g", 30, 4096, 7);
    const otherFiles = files("o", 30, 4096, 8);
    const gone = await dataLayer(goneFiles);
    const other = await dataLayer(otherFiles);
    const goneDigest = pushedDigest(gone);
    const ref = await pulled("deleted", [gone, other]);
    const del = await fetch(`${reg.url}/v2/faults/deleted/blobs/${goneDigest}`, {
      method: "DELETE",
    });
    await del.body?.cancel();
    assert.equal(del.status, 202);
    const out = await run(
      ref,
      "cat /g/029 > /dev/null 2>&1 && echo gone-read || echo gone-eio; " +
        "sha256sum /o/029; " +
        `cat /.stargz-snapshotter/${goneDigest}.json; ` +
        `cat /.stargz-snapshotter/${pushedDigest(other)}.json`,
    );
    const [verdict, sum, goneState, otherState] = out.trim().split("\n");
    assert.equal(verdict, "gone-eio");
    assert.equal(sum, `${sha256(otherFiles["o/029"])}  /o/029`);
    assert.match(JSON.parse(goneState).error, /HTTP 404.*BLOB_UNKNOWN/);
    assert.equal(JSON.parse(otherState).error, undefined);
  });

  it("keeps serving when the cache disk is full: the cache stops growing and says so", async () => {
    const diskFiles = files("d", 16, 256 << 10, 9);
    const layer = await dataLayer(diskFiles);
    const ref = await pulled("diskfull", [layer]);
    const names = Object.keys(diskFiles).map((n) => `/${n}`);
    const out = await run(ref, `sha256sum ${names.join(" ")}`);
    assert.equal(
      out,
      names.map((n) => `${sha256(diskFiles[n.slice(1)])}  ${n}\n`).join(""),
    );
    const cache = await adminGet("/v1/cache") as Record<string, number | string>;
    assert.ok(Number(cache.diskErrors) > 0, JSON.stringify(cache));
    assert.match(String(cache.diskError), /ENOSPC|no space/i);
    assert.ok(Number(cache.diskBytes) <= Number(cache.diskBoundBytes), JSON.stringify(cache));
    const used = Number(cache.diskBytes);
    // More reads (now from memory or the registry) leave the disk part where it stopped.
    assert.equal(await run(ref, `sha256sum ${names.join(" ")}`), out);
    const after = await adminGet("/v1/cache") as Record<string, number>;
    assert.ok(after.diskBytes <= Math.max(used, after.diskBoundBytes));
    assert.equal(daemon.child.exitCode, null, "the daemon is alive");
  });
});

/** The digest a layer has in the registry. */
function pushedDigest(layer: BuiltLayer): string {
  return `sha256:${createHash("sha256").update(layer.data).digest("hex")}`;
}
