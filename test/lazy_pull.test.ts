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
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupDir, startContainerd, startStargz } from "./_containerd.ts";
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
const decisionsSeen = new Set<string>();

/** The daemon's `remote-snapshot-prepared` decisions logged since the last call, in order. */
function newDecisions(): { prepared: string; reason?: string; digest?: string }[] {
  const out = [];
  for (const line of daemon!.logs().split("\n")) {
    if (!line.includes("remote-snapshot-prepared") || decisionsSeen.has(line)) continue;
    decisionsSeen.add(line);
    const rec = JSON.parse(line);
    out.push({
      prepared: rec["remote-snapshot-prepared"],
      reason: rec.reason,
      digest: rec.digest ?? rec.layer,
    });
  }
  return out;
}

function adminGet(p: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: path.join(dir, "admin.sock"), path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(JSON.parse(body)));
    }).on("error", reject);
  });
}

async function startDaemon(): Promise<void> {
  daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
}

const run = (ref: string, script: string): Promise<string> =>
  ctd!.ctrOk([
    "run",
    "--rm",
    "--snapshotter",
    "stargz",
    ref,
    `lazy-${randomUUID().slice(0, 8)}`,
    "/bin/sh",
    "-c",
    script,
  ], {
    namespace: "k8s.io",
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
    `[admin]\naddress = "${path.join(dir, "admin.sock")}"\n`,
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

  it("falls back per layer for an image mixing eStargz and plain gzip layers", async () => {
    const mixed = await pushLayers(reg!, "lazy/mixed", "v1", [busybox.esgz, data.plain]);
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
