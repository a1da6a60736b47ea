/**
 * The product end to end: a real containerd 1.6 with our daemon as its `stargz` proxy
 * snapshotter, images in a real registry (built from busybox-static and generated files,
 * converted by our converter), pulled through CRI as kubelet does, and run with runc. eStargz
 * layers must become remote snapshots that containerd never downloads.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  adminText,
  cleanupDir,
  decisionReader,
  startContainerd,
  startStargz,
} from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import {
  estargzLayer,
  makeBusyboxRoot,
  patternBytes,
  plainLayer,
  pushLayers,
  tarDir,
} from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { startRegistry } from "./_registry.ts";
import { ARTIFACTS, chromium, renderPage } from "./_chromium.ts";
import { runCli } from "./_cli.ts";
import { NO_LAYER } from "../src/metrics/mod.ts";
import type { PushedImage, TestRegistry } from "./_registry.ts";

let dir: string;
let reg: TestRegistry | undefined;
let privateReg: TestRegistry | undefined;
let daemon: StargzProcess | undefined;
let ctd: Containerd | undefined;
let busybox: { esgz: BuiltLayer; plain: BuiltLayer };
let data: { esgz: BuiltLayer; plain: BuiltLayer };
const big = patternBytes(3 << 20, 99);
const bigSum = createHash("sha256").update(big).digest("hex");

/** The daemon's `remote-snapshot-prepared` decisions logged since the last call, in order. */
const newDecisions = decisionReader(() => daemon!.logs());

const admin = (p: string): Promise<string> => adminText(path.join(dir, "admin.sock"), p);

async function adminGet(p: string): Promise<unknown> {
  return JSON.parse(await admin(p));
}

async function startDaemon(): Promise<void> {
  daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
}

const run = (ref: string, script: string): Promise<string> =>
  ctd!.runStargz(ref, `lazy-${randomUUID().slice(0, 8)}`, ["/bin/sh", "-c", script], {
    timeoutMs: 120_000,
  });

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-lazy-"));
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  tarDir(root, path.join(dir, "busybox.tar"));
  const extra = path.join(dir, "extra");
  fs.mkdirSync(path.join(extra, "data"), { recursive: true });
  fs.mkdirSync(path.join(extra, "etc"), { recursive: true });
  fs.writeFileSync(path.join(extra, "data", "hello"), "hello lazy\n");
  fs.writeFileSync(path.join(extra, "data", "big"), big);
  fs.writeFileSync(path.join(extra, "etc", ".wh.group"), "");
  tarDir(extra, path.join(dir, "extra.tar"));
  busybox = {
    esgz: await estargzLayer(path.join(dir, "busybox.tar")),
    plain: plainLayer(path.join(dir, "busybox.tar")),
  };
  data = {
    esgz: await estargzLayer(path.join(dir, "extra.tar")),
    plain: plainLayer(path.join(dir, "extra.tar")),
  };

  reg = await startRegistry();
  privateReg = await startRegistry({ auth: "basic" });
  // Our daemon finds registry credentials where docker and the Go daemon do.
  const dockerConfig = path.join(dir, "docker");
  fs.mkdirSync(dockerConfig);
  const [user, password] = Object.entries(privateReg.users)[0];
  fs.writeFileSync(
    path.join(dockerConfig, "config.json"),
    JSON.stringify({
      auths: { [privateReg.host]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } },
    }),
  );
  process.env.DOCKER_CONFIG = dockerConfig;
  fs.writeFileSync(
    path.join(dir, "config.toml"),
    `metrics_address = "127.0.0.1:0"\n[admin]\naddress = "${path.join(dir, "admin.sock")}"\n`,
  );
  await startDaemon();
  ctd = await startContainerd({ dir, snapshotterAddress: daemon!.address });
});

after(async () => {
  await ctd?.stop();
  await daemon?.stop();
  await reg?.stop();
  await privateReg?.stop();
  delete process.env.DOCKER_CONFIG;
  await cleanupDir(dir);
});

describe("lazy pull with containerd", () => {
  let esgzImage: PushedImage;
  const script =
    "cat /data/hello; sha256sum /data/big; ls /.stargz-snapshotter/; test -e /etc/group && echo group-present || echo group-gone";

  it("pulls an eStargz image without downloading its layers and runs it", async () => {
    esgzImage = await pushLayers(reg!, "lazy/app", "esgz", [busybox.esgz, data.esgz]);
    await criPull(ctd!.address, esgzImage.ref);
    const decisions = newDecisions();
    assert.deepEqual(decisions.map((d) => d.prepared), ["true", "true"], JSON.stringify(decisions));
    const content = await ctd!.ctrOk(["content", "ls", "-q"], { namespace: "k8s.io" });
    for (const l of esgzImage.layers) {
      assert.ok(!content.includes(l.digest), `layer ${l.digest} was downloaded`);
    }
    const infos = await ctd!.ctrOk(["snapshots", "--snapshotter", "stargz", "ls"], {
      namespace: "k8s.io",
    });
    assert.equal(infos.trim().split("\n").length, 3, infos);
    const out = await run(esgzImage.ref, script);
    const states = esgzImage.layers.map((l) => `${l.digest}.json`).sort();
    assert.equal(out, `hello lazy\n${bigSum}  /data/big\n${states.join("\n")}\ngroup-gone\n`);
    const layers = await adminGet("/v1/layers") as {
      digest: string;
      state: { fetchedSize: number };
    }[];
    assert.deepEqual(
      layers.map((l) => l.digest).sort(),
      esgzImage.layers.map((l) => l.digest).sort(),
    );
  });

  let mixed: PushedImage;
  it("falls back per layer for an image mixing eStargz and plain gzip layers", async () => {
    mixed = await pushLayers(reg!, "lazy/mixed", "v1", [busybox.esgz, data.plain]);
    await criPull(ctd!.address, mixed.ref);
    const decisions = newDecisions();
    // The busybox layer is shared with the first image: containerd already has its snapshot.
    assert.deepEqual(decisions.map((d) => d.prepared), ["false"], JSON.stringify(decisions));
    assert.match(String(decisions[0].reason), /TOC|eStargz|footer|stargz/i);
    const content = await ctd!.ctrOk(["content", "ls", "-q"], { namespace: "k8s.io" });
    assert.ok(
      content.includes(mixed.layers[1].digest),
      "containerd downloaded the plain layer itself",
    );
    assert.equal(await run(mixed.ref, "cat /data/hello"), "hello lazy\n");
  });

  it("stargz status and the status page show remote layers and fallbacks with reasons", async () => {
    const res = await runCli(["status", "--admin", path.join(dir, "admin.sock")]);
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.split("\n");
    const section = (ref: string) => {
      const at = lines.indexOf(`IMAGE ${ref}`);
      assert.ok(at >= 0, res.stdout);
      const end = lines.indexOf("", at);
      return lines.slice(at, end === -1 ? undefined : end).join("\n");
    };
    for (const l of esgzImage.layers) {
      assert.match(
        section(esgzImage.ref),
        new RegExp(`${l.digest} .*\\[[#.]{20}\\] +\\d+\\.\\d% +remote`),
      );
    }
    assert.match(section(mixed.ref), new RegExp(`${mixed.layers[1].digest} .* fallback: \\S`));
    assert.match(res.stdout, new RegExp(`^config ${path.join(dir, "config.toml")}$`, "m"));
    const json = await runCli(["status", "--admin", path.join(dir, "admin.sock"), "--json"]);
    const doc = JSON.parse(json.stdout);
    assert.equal(doc.daemon.root, daemon!.root);

    const page = path.join(dir, "status.html");
    fs.writeFileSync(page, await admin("/"));
    const browser = await chromium();
    if (!browser) {
      assert.fail("chromium is not installed (scripts/setup-dev.sh installs it)");
    }
    const shot = path.join(ARTIFACTS, `status-page-${process.pid}.png`);
    const dom = await renderPage(browser, page, shot);
    console.log(`status page screenshot: ${shot}`);
    assert.ok(fs.statSync(shot).size > 1000, "a screenshot was written");
    assert.match(dom, new RegExp(`<h2>${esgzImage.ref.replace(/[.]/g, "\\.")}</h2>`));
    const bars = [
      ...dom.matchAll(
        /<tr class="layer" data-digest="([^"]+)" data-mode="remote">.*?aria-valuenow="([\d.]+)"/g,
      ),
    ];
    assert.deepEqual(
      new Set(bars.map((b) => b[1])),
      new Set([...esgzImage.layers.map((l) => l.digest)]),
    );
    assert.match(
      dom,
      new RegExp(
        `data-digest="${mixed.layers[1].digest}" data-mode="fallback">.*?class="reason">[^<]+<`,
      ),
    );
    assert.match(dom, /<table id="cache">.*diskBytes/s);
  });

  it("metrics_address serves upstream's metrics for the reads the containers made", async () => {
    const served = daemon!.logs().split("\n").filter((l) => l.includes('"metrics API serving"'))
      .map((l) => JSON.parse(l).address as string).pop();
    assert.ok(served, "the metrics server announced its address");
    const text = await (await fetch(`${served}/metrics`)).text();
    const sample = (name: string, labels: string) => {
      const m = new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, "m").exec(text);
      return m ? Number(m[1]) : undefined;
    };
    for (const l of esgzImage.layers) {
      const op = (t: string) => `operation_type="${t}",layer="${l.digest}"`;
      assert.ok(sample("stargz_fs_operation_duration_milliseconds_count", op("mount"))! >= 1);
      assert.ok(sample("stargz_fs_operation_count", op("on_demand_read_access_count"))! > 0);
      assert.ok(sample("stargz_fs_layer_size_bytes", `digest="${l.digest}",mountpoint="[^"]+"`)!);
    }
    assert.ok(
      esgzImage.layers.some((l) =>
        sample(
          "stargz_fs_operation_duration_microseconds_count",
          `operation_type="node_readdir",layer="${l.digest}"`,
        )! > 0
      ),
      "the containers listed directories",
    );
    assert.ok(
      sample(
        "stargz_fs_operation_duration_milliseconds_count",
        `operation_type="all_prefetches_completed",layer="${NO_LAYER}"`,
      )! >= 1,
    );
    const host = reg!.host;
    // Blobs are located and read with range requests (206); manifests come back 200.
    assert.ok(sample("stargz_registry_requests_total", `host="${host}",code="206"`)! > 0, text);
    assert.ok(sample("stargz_fallback_total", 'reason="[^"]+"')! >= 1);
  });

  it("runs a plain image (every layer falls back)", async () => {
    const plain = await pushLayers(reg!, "lazy/plain", "v1", [busybox.plain, data.plain]);
    await criPull(ctd!.address, plain.ref);
    assert.ok(newDecisions().every((d) => d.prepared === "false"));
    assert.equal(await run(plain.ref, "sha256sum /data/big"), `${bigSum}  /data/big\n`);
  });

  it("pulls a private image with credentials from the docker config", async () => {
    // A layer only this image has, so that its Prepare reaches the private registry.
    const secret = path.join(dir, "secret");
    fs.mkdirSync(secret);
    fs.writeFileSync(path.join(secret, "secret.txt"), `private ${randomUUID()}\n`);
    tarDir(secret, path.join(dir, "secret.tar"));
    const layer = await estargzLayer(path.join(dir, "secret.tar"));
    const image = await pushLayers(privateReg!, "secret/app", "v1", [
      busybox.esgz,
      data.esgz,
      layer,
    ]);
    const [username, password] = Object.entries(privateReg!.users)[0];
    await criPull(ctd!.address, image.ref, { username, password });
    assert.deepEqual(newDecisions().map((d) => d.prepared), ["true"]);
    const content = await ctd!.ctrOk(["content", "ls", "-q"], { namespace: "k8s.io" });
    assert.ok(!content.includes(image.layers[2].digest));
    assert.match(await run(image.ref, "cat /secret.txt"), /^private /);
    assert.doesNotMatch(daemon!.logs(), new RegExp(password));
  });

  it("keeps working across a restart of the daemon", async () => {
    assert.equal(await daemon!.stop(), 0);
    await startDaemon();
    await ctd!.snapshotterReady();
    assert.equal(
      await run(esgzImage.ref, script).then((o) => o.split("\n")[1]),
      `${bigSum}  /data/big`,
    );
  });
});
