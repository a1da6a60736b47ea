/**
 * A running container survives restarts of the daemon: a real containerd with our daemon as its
 * snapshotter runs a container (lazily pulled through CRI) that reads files not fetched yet,
 * files read before, lists a directory, reads the layer's state file and execs binaries in a loop, writing each outcome to a
 * log on the host. The daemon is then stopped with SIGTERM, killed with SIGKILL, left down for
 * a while, and replaced by a differently named copy of itself (an upgrade in place): the
 * container must not see a single failure, and must keep going after each restart.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import {
  cleanupDir,
  mountsUnder,
  REPO_ROOT,
  startContainerd,
  startStargz,
  waitUntil,
} from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import { estargzLayer, makeBusyboxRoot, patternBytes, pushLayers, tarDir } from "./_images.ts";
import { startFaultProxy, startRegistry } from "./_registry.ts";
import type { FaultProxy, TestRegistry } from "./_registry.ts";
import { processesWith } from "./_fuse.ts";

/** Files in the data layer: the loop reads a different one each round, so most are cold. */
const FILES = 400;
/** How long the daemon stays down in the outage case (30 s was measured once; see the docs). */
const OUTAGE_MS = Number(process.env.STARGZ_TEST_OUTAGE_MS ?? 3000);

let dir: string;
let out: string;
let reg: TestRegistry | undefined;
/** Between the daemon (and containerd) and the registry, to hold a read in flight. */
let proxy: FaultProxy | undefined;
/** The image, referenced through the proxy. */
let ref: string;
let daemon: StargzProcess | undefined;
let ctd: Containerd | undefined;
// runc keeps its state under one root for every containerd (/run/containerd/runc/<namespace>):
// a fixed id would meet the last run's container if that one was not deleted.
const container = `restart-loop-${randomUUID().slice(0, 8)}`;

/** Every round logs `ok N`; every failed step logs `FAIL <step> N <rc>`. */
const LOOP = `
i=0
while true; do
  f=/data/f$((i % ${FILES}))
  cat $f > /dev/null || echo "FAIL read-cold $i $?" >> /out/log
  cat /data/hello > /dev/null || echo "FAIL read-warm $i $?" >> /out/log
  ls /data > /dev/null || echo "FAIL list $i $?" >> /out/log
  /bin/busybox true || echo "FAIL exec $i $?" >> /out/log
  cat /.stargz-snapshotter/*.json > /dev/null || echo "FAIL state-file $i $?" >> /out/log
  echo "ok $i" >> /out/log
  i=$((i + 1))
  sleep 0.05
done
`;

function logLines(): string[] {
  return fs.readFileSync(path.join(out, "log"), "utf8").split("\n").filter((l) => l !== "");
}

function rounds(): number {
  return logLines().filter((l) => l.startsWith("ok ")).length;
}

function failures(): string[] {
  return logLines().filter((l) => l.startsWith("FAIL"));
}

/** Waits until the container completed `n` more rounds than now; returns how long it took. */
async function progress(n: number, what: string, timeoutMs = 60_000): Promise<number> {
  const start = Date.now();
  const target = rounds() + n;
  while (rounds() < target) {
    if (Date.now() - start > timeoutMs) {
      const logs = daemon!.logs().split("\n").filter((l) => /warn|error|resend|taken/.test(l));
      throw new Error(
        `no progress ${what}: ${rounds()}/${target}; ${failures().join("; ")}\n` +
          logs.slice(-20).join("\n"),
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

/**
 * containerd fails calls to a proxy snapshotter while its connection is in reconnect backoff
 * (it does not wait for it): wait until it reaches the new daemon.
 */
async function containerdReconnected(): Promise<void> {
  await waitUntil(
    async () =>
      (await ctd!.ctr(["snapshots", "--snapshotter", "stargz", "ls"], { namespace: "k8s.io" }))
        .code === 0,
    30_000,
    "containerd to reconnect to the snapshotter",
  );
}

/** Digests of the layers the admin API lists. */
function adminLayers(): Promise<string[]> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: path.join(dir, "admin.sock"), path: "/v1/layers" }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        try {
          resolve((JSON.parse(body) as { digest: string }[]).map((l) => l.digest).sort());
        } catch (err) {
          reject(err);
        }
      });
    }).on("error", reject);
  });
}

function configArgs(): string[] {
  return ["--config", path.join(dir, "config.toml")];
}

async function startDaemon(binary?: string): Promise<void> {
  daemon = await startStargz({ dir, args: configArgs(), binary });
}

function holders(): number[] {
  return processesWith(path.join(dir, "stargz-root", "fd-holder.sock"));
}

/** Open /dev/fuse descriptors of `pid`. */
function fuseFds(pid: number): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === "/dev/fuse") n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

/** `major:minor` of the mount at `mountpoint` (the minor names the FUSE connection). */
function mountDev(mountpoint: string): string {
  const line = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")
    .find((l) => l.split(" ")[4] === mountpoint);
  return line?.split(" ")[2] ?? "";
}

function fuseMounts(): string[] {
  const text = fs.readFileSync("/proc/self/mountinfo", "utf8");
  const snapshots = path.join(dir, "stargz-root", "snapshots") + "/";
  return text.split("\n").filter((l) => l.includes(" - fuse.stargz ")).map((l) => l.split(" ")[4])
    .filter((m) => m?.startsWith(snapshots));
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-rs-"));
  out = path.join(dir, "out");
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, "log"), "");
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  fs.mkdirSync(path.join(root, "data"));
  fs.writeFileSync(path.join(root, "data", "hello"), "hello\n");
  for (let i = 0; i < FILES; i++) {
    fs.writeFileSync(path.join(root, "data", `f${i}`), patternBytes(24 * 1024, i + 1));
  }
  tarDir(root, path.join(dir, "rootfs.tar"));
  const layer = await estargzLayer(path.join(dir, "rootfs.tar"));
  reg = await startRegistry();
  await pushLayers(reg, "restart/app", "v1", [layer]);
  proxy = await startFaultProxy(reg.url);
  ref = `${proxy.host}/restart/app:v1`;
  // Without prefetch and background fetch, every first read of a file goes to the registry.
  fs.writeFileSync(
    path.join(dir, "config.toml"),
    `noprefetch = true\nno_background_fetch = true\n[admin]\naddress = "${
      path.join(dir, "admin.sock")
    }"\n`,
  );
  await startDaemon();
  ctd = await startContainerd({ dir, snapshotterAddress: daemon!.address });
  await criPull(ctd.address, ref);
  await ctd.ctrOk([
    "run",
    "-d",
    "--snapshotter",
    "stargz",
    "--mount",
    `type=bind,src=${out},dst=/out,options=rbind:rw`,
    ref,
    container,
    "/bin/sh",
    "-c",
    LOOP,
  ], { namespace: "k8s.io" });
  await progress(5, "before any restart");
});

after(async () => {
  await ctd?.ctr(["task", "kill", "-s", "SIGKILL", container], { namespace: "k8s.io" });
  await ctd?.ctr(["task", "rm", "-f", container], { namespace: "k8s.io" });
  await ctd?.ctr(["containers", "rm", container], { namespace: "k8s.io" });
  await ctd?.stop();
  await daemon?.stop();
  for (const pid of holders()) process.kill(pid, "SIGTERM");
  await proxy?.stop();
  await reg?.stop();
  await cleanupDir(dir);
});

describe("restarting the daemon under a running container", () => {
  it("graceful restart (SIGTERM, then start again): no failed read or exec", async () => {
    assert.equal(await daemon!.stop(), 0);
    await startDaemon();
    const ms = await progress(10, "after a graceful restart");
    assert.deepEqual(failures(), []);
    assert.match(daemon!.logs(), /taken over from the previous daemon/);
    console.log(`graceful restart: 10 rounds ${ms} ms after the new daemon serves`);
  });

  it("crash (SIGKILL, then start again): no failed read or exec", async () => {
    const layers = await adminLayers();
    await daemon!.kill();
    await startDaemon();
    const first = await progress(1, "after a crash");
    const ms = await progress(10, "after a crash");
    assert.deepEqual(failures(), []);
    console.log(
      `crash restart: first round ${first} ms, 10 more ${ms} ms after the new daemon serves`,
    );
    assert.deepEqual(await adminLayers(), layers);
  });

  it("a read in flight when the daemon is killed completes after the restart", async () => {
    const blobReads = (): number =>
      proxy!.requests.filter((r) => r.method === "GET" && r.url.includes("/blobs/")).length;
    const before = blobReads();
    // The next cold read hangs in the daemon, waiting for the registry.
    proxy!.rule = (r) =>
      r.method === "GET" && r.url.includes("/blobs/") ? { kind: "hang" } : { kind: "pass" };
    await waitUntil(() => blobReads() > before, 30_000, "a read to reach the registry");
    const stuckAt = rounds();
    await daemon!.kill();
    proxy!.rule = () => ({ kind: "pass" });
    await startDaemon();
    // The kernel resends the READ the dead daemon had taken: the round it belonged to completes.
    await progress(3, "after killing the daemon in the middle of a read");
    assert.ok(rounds() > stuckAt);
    assert.deepEqual(failures(), []);
    assert.doesNotMatch(daemon!.logs(), /cannot resend/);
  });

  it("the registry unreachable while the daemon restarts: containers wait, then go on", async () => {
    proxy!.rule = () => ({ kind: "status", status: 503 });
    await daemon!.kill();
    await startDaemon();
    await waitUntil(
      () => /cannot open the layer of a handed-over mount/.test(daemon!.logs()),
      60_000,
      "the daemon to find the registry unreachable",
    );
    proxy!.rule = () => ({ kind: "pass" });
    await progress(5, "after the registry came back");
    assert.deepEqual(failures(), []);
    assert.match(daemon!.logs(), /taken over from the previous daemon/);
  });

  it("an outage: reads block while the daemon is down and none fails", async () => {
    await daemon!.kill();
    const before = rounds();
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    // A round already past its last FUSE access may finish; none starts its reads again.
    assert.ok(rounds() <= before + 1, `${rounds() - before} rounds while down`);
    await startDaemon();
    await progress(10, "after an outage");
    assert.deepEqual(failures(), []);
  });

  it("upgrade: another build of the program takes over", async () => {
    // From source, the compiled executable when one was built (another runtime under Deno);
    // otherwise, and for the executable itself, a differently named copy.
    const binary = process.env.STARGZ_TEST_BINARY;
    const built = path.join(
      REPO_ROOT,
      "dist",
      `stargz-linux-${os.arch() === "x64" ? "amd64" : "arm64"}`,
    );
    const source = binary ??
      (fs.existsSync(built) ? built : path.join(REPO_ROOT, "src", "main.ts"));
    const copy = source.endsWith(".ts")
      ? path.join(REPO_ROOT, "src", `main-upgraded-${process.pid}.ts`)
      : path.join(dir, "stargz-upgraded");
    fs.copyFileSync(source, copy);
    fs.chmodSync(copy, 0o755);
    try {
      assert.equal(await daemon!.stop(), 0);
      await startDaemon(copy);
      await progress(10, `after an upgrade to ${source}`);
      assert.deepEqual(failures(), []);
    } finally {
      if (copy.endsWith(".ts")) fs.rmSync(copy, { force: true });
    }
  });

  it("20 restarts in a row (SIGTERM and SIGKILL in turn) leak nothing", async () => {
    const [first] = fuseMounts();
    const dev = mountDev(first!);
    for (let i = 0; i < 20; i++) {
      if (i % 2 === 0) assert.equal(await daemon!.stop(), 0);
      else await daemon!.kill();
      await startDaemon();
      await progress(2, `after restart ${i + 1}`);
      assert.deepEqual(fuseMounts(), [first]);
      // The very connection the container uses, never a new mount.
      assert.equal(mountDev(first!), dev);
      const hs = holders();
      assert.equal(hs.length, 1, `holders after restart ${i + 1}: ${hs}`);
      assert.equal(fuseFds(hs[0]!), 1);
    }
    assert.deepEqual(failures(), []);
  });

  it("a new container of the image starts without pulling, and nothing leaked", async () => {
    const mounts = fuseMounts();
    assert.equal(mounts.length, 1, mounts.join("\n"));
    await containerdReconnected();
    const stdout = await ctd!.runStargz(ref, "restart-second", ["/bin/cat", "/data/hello"]);
    assert.equal(stdout, "hello\n");
    const hs = holders();
    assert.equal(hs.length, 1, `holders: ${hs}`);
    assert.equal(fuseFds(hs[0]!), mounts.length);
    // The runtime holds a second descriptor per mount while it reads (Bun's stream, Deno's
    // reader); both go with the mount.
    assert.ok(fuseFds(daemon!.child.pid!) <= 2 * mounts.length);
    assert.deepEqual(failures(), []);
  });

  it("daemon and holder both killed: the container breaks, the daemon recovers, nothing leaks", async () => {
    const [old] = fuseMounts();
    const oldDev = mountDev(old!);
    await daemon!.kill();
    for (const pid of holders()) process.kill(pid, "SIGKILL");
    await startDaemon();
    // The dead connection was detached and the layer mounted anew at the same place.
    await waitUntil(
      () => fuseMounts().length === 1,
      30_000,
      "the layer mounted anew",
    );
    const mounts = fuseMounts();
    assert.equal(mounts.length, 1, mounts.join("\n"));
    assert.notEqual(mountDev(mounts[0]!), oldDev);
    await containerdReconnected();
    assert.equal(
      await ctd!.runStargz(ref, "restart-third", ["/bin/cat", "/data/hello"]),
      "hello\n",
    );
    const hs = holders();
    assert.equal(hs.length, 1, `holders: ${hs}`);
    assert.equal(fuseFds(hs[0]!), 1);
    assert.ok((await mountsUnder(path.join(dir, "stargz-root"))).length >= 1);
  });
});
