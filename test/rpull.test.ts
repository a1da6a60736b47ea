/**
 * `stargz rpull` against a real containerd 1.6 (our daemon as its `stargz` snapshotter), real
 * registries and runc: eStargz layers become remote snapshots that containerd never downloads,
 * other layers are fetched and applied through containerd's diff service, the image runs with
 * `ctr run`, and a failed pull leaves nothing behind once its lease is gone. containerd runs
 * without its CRI plugin (a machine without Kubernetes), and once more with it.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { scriptCommand } from "../src/runtime/mod.ts";
import { type CliResult, MAIN_TS, waitExit } from "./_cli.ts";
import { cleanupDir, startContainerd, startStargz } from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { estargzLayer, makeBusyboxRoot, plainLayer, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { closedPort, makeCertificates, pushIndex, startRegistry } from "./_registry.ts";
import type { TestRegistry } from "./_registry.ts";

const NS = "rpull";
let dir: string;
let reg: TestRegistry | undefined;
let privateReg: TestRegistry | undefined;
/** HTTPS with client certificates, serving `reg`'s storage. */
let tlsReg: TestRegistry | undefined;
/** Daemon and rpull configuration: `[resolver] config_path` = `<dir>/certs.d`. */
let configFile: string;
/** A registry name that only certs.d knows how to reach (through a mirror). */
const MIRRORED = "mirror-only.invalid";
let daemon: StargzProcess | undefined;
let ctd: Containerd | undefined;
let busybox: { esgz: BuiltLayer; plain: BuiltLayer };
let hello: { esgz: BuiltLayer; plain: BuiltLayer };
let dockerConfig: string;
let emptyDockerConfig: string;

/** `stargz rpull args…` (the compiled binary when `STARGZ_TEST_BINARY` is set). */
function rpull(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  target: Containerd = ctd!,
  stdin?: string,
): Promise<CliResult> {
  const argv = ["rpull", "--address", target.address, "--namespace", NS, ...args];
  const binary = process.env.STARGZ_TEST_BINARY;
  const [cmd, ...rest] = binary ? [binary, ...argv] : scriptCommand(MAIN_TS, argv);
  const child = spawn(cmd, rest, {
    stdio: [stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    env: { ...process.env, DOCKER_CONFIG: emptyDockerConfig, ...env },
  });
  child.stdin?.end(stdin);
  return waitExit(child, 180_000);
}

async function rpullOk(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  target: Containerd = ctd!,
): Promise<void> {
  const r = await rpull(args, env, target);
  assert.equal(r.code, 0, `rpull ${args.join(" ")}: ${r.stderr}${r.stdout}`);
}

const ctr = (args: string[]) => ctd!.ctrOk(args, { namespace: NS });

function runImage(ref: string, script: string, target: Containerd = ctd!): Promise<string> {
  return target.ctrOk([
    "run",
    "--rm",
    "--snapshotter",
    "stargz",
    ref,
    `rpull-${randomUUID().slice(0, 8)}`,
    "/bin/sh",
    "-c",
    script,
  ], { namespace: NS, timeoutMs: 120_000 });
}

/** Snapshots of the stargz snapshotter: name → kind. */
async function snapshots(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const line of (await ctr(["snapshots", "--snapshotter", "stargz", "ls"])).split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols[0] && cols[0] !== "KEY") out.set(cols[0], cols[cols.length - 1]);
  }
  return out;
}

async function isRemote(chainId: string): Promise<boolean> {
  const info = await ctr(["snapshots", "--snapshotter", "stargz", "info", chainId]);
  return info.includes('"containerd.io/snapshot/remote": "remote snapshot"');
}

function layerTar(name: string, files: Record<string, string>): string {
  const root = path.join(dir, name);
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  }
  const tar = path.join(dir, `${name}.tar`);
  tarDir(root, tar);
  return tar;
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-rpull-"));
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  tarDir(root, path.join(dir, "busybox.tar"));
  const helloTar = layerTar("hello", { "data/hello": "hello rpull\n" });
  busybox = {
    esgz: await estargzLayer(path.join(dir, "busybox.tar")),
    plain: plainLayer(path.join(dir, "busybox.tar")),
  };
  hello = { esgz: await estargzLayer(helloTar), plain: plainLayer(helloTar) };
  reg = await startRegistry();
  privateReg = await startRegistry({ auth: "basic" });
  const certs = await makeCertificates(path.join(dir, "pki"));
  tlsReg = await startRegistry({
    storage: reg.storage,
    tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.ca },
  });
  const certsD = path.join(dir, "certs.d");
  fs.mkdirSync(path.join(certsD, MIRRORED), { recursive: true });
  fs.writeFileSync(
    path.join(certsD, MIRRORED, "hosts.toml"),
    `[host."http://${reg.host}"]\ncapabilities = ["pull", "resolve"]\n`,
  );
  const tlsDir = path.join(certsD, tlsReg.host.replace(":", "_") + "_");
  fs.mkdirSync(tlsDir);
  fs.writeFileSync(
    path.join(tlsDir, "hosts.toml"),
    `server = "https://${tlsReg.host}"\nca = "${certs.ca}"\n` +
      `client = [["${certs.clientCert}", "${certs.clientKey}"]]\n`,
  );
  configFile = path.join(dir, "config.toml");
  fs.writeFileSync(configFile, `[resolver]\nconfig_path = "${certsD}"\n`);
  const [user, password] = Object.entries(privateReg.users)[0];
  dockerConfig = path.join(dir, "docker");
  emptyDockerConfig = path.join(dir, "docker-empty");
  fs.mkdirSync(dockerConfig);
  fs.mkdirSync(emptyDockerConfig);
  fs.writeFileSync(
    path.join(dockerConfig, "config.json"),
    JSON.stringify({
      auths: { [privateReg.host]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } },
    }),
  );
  // The daemon mounts private layers with the docker config's credentials, as upstream's does.
  const saved = process.env.DOCKER_CONFIG;
  process.env.DOCKER_CONFIG = dockerConfig;
  try {
    daemon = await startStargz({ dir, args: ["--config", configFile] });
  } finally {
    if (saved === undefined) delete process.env.DOCKER_CONFIG;
    else process.env.DOCKER_CONFIG = saved;
  }
  // containerd as used without Kubernetes; the CRI-enabled case has its own suite below.
  ctd = await startContainerd({ dir, snapshotterAddress: daemon.address, cri: false });
});

after(async () => {
  await ctd?.stop();
  await daemon?.stop();
  await reg?.stop();
  await privateReg?.stop();
  await tlsReg?.stop();
  await cleanupDir(dir);
});

describe("stargz rpull", () => {
  it("pulls an eStargz image lazily: remote snapshots, no layer blobs, ctr run works", async () => {
    const image = await pushLayers(reg!, "rpull/app", "esgz", [busybox.esgz, hello.esgz]);
    const before = await snapshots();
    await rpullOk([image.ref]);
    const images = await ctr(["images", "ls", "-q"]);
    assert.ok(images.split("\n").includes(image.ref), images);
    const content = await ctr(["content", "ls", "-q"]);
    for (const l of image.layers) assert.ok(!content.includes(l.digest), `${l.digest} downloaded`);
    assert.ok(content.includes(image.manifestDigest), "manifest in the content store");
    assert.ok(content.includes(image.config.digest), "config in the content store");
    const after = await snapshots();
    const added = [...after.keys()].filter((k) => !before.has(k));
    assert.equal(added.length, 2, JSON.stringify([...after]));
    for (const chain of added) {
      assert.equal(after.get(chain), "Committed");
      assert.ok(await isRemote(chain), `${chain} is not a remote snapshot`);
    }
    assert.equal(await runImage(image.ref, "cat /data/hello"), "hello rpull\n");
    const leases = await ctr(["leases", "ls", "-q"]);
    assert.doesNotMatch(leases, /stargz-rpull/, "the pull's lease was released");
  });

  it("pulling the same image again changes nothing", async () => {
    const ref = `${reg!.host}/rpull/app:esgz`;
    const state = async () => [
      await ctr(["content", "ls", "-q"]),
      [...(await snapshots()).keys()].sort().join("\n"),
      await ctr(["images", "ls", "-q"]),
    ];
    const before = await state();
    const prepares = daemon!.logs().split("remote-snapshot-prepared").length;
    await rpullOk([ref]);
    assert.deepEqual(await state(), before);
    assert.equal(daemon!.logs().split("remote-snapshot-prepared").length, prepares);
  });

  it("pulls the platform's manifest from an index; the image record names the index", async () => {
    const amd = await pushLayers(reg!, "rpull/multi", "amd64", [busybox.esgz, hello.esgz]);
    const arm = await pushLayers(reg!, "rpull/multi", "arm64", [busybox.plain]);
    const index = await pushIndex(reg!, "rpull/multi", "v1", [
      { image: arm, platform: { os: "linux", architecture: "arm64" } },
      { image: amd, platform: { os: "linux", architecture: "amd64" } },
    ]);
    await rpullOk(["--platform", "linux/amd64", index.ref]);
    const images = await ctr(["images", "ls"]);
    const row = images.split("\n").find((l) => l.startsWith(`${index.ref} `)) ?? "";
    assert.match(
      row,
      new RegExp(`application/vnd\\.oci\\.image\\.index\\.v1\\+json\\s+${index.digest}`),
    );
    const content = await ctr(["content", "ls"]);
    const indexRow = content.split("\n").find((l) => l.startsWith(index.digest)) ?? "";
    assert.match(
      indexRow,
      new RegExp(`containerd\\.io/gc\\.ref\\.content\\.m\\.1=${amd.manifestDigest}`),
    );
    assert.ok(
      !content.split("\n").some((l) => l.startsWith(arm.manifestDigest)),
      "the other platform's manifest is not fetched",
    );
    assert.equal(await runImage(index.ref, "cat /data/hello"), "hello rpull\n");
  });

  it("fetches and applies the plain layer of a mixed image; it runs", async () => {
    const image = await pushLayers(reg!, "rpull/mixed", "v1", [busybox.esgz, hello.plain]);
    await rpullOk([image.ref]);
    const content = await ctr(["content", "ls", "-q"]);
    assert.ok(content.includes(image.layers[1].digest), "plain layer fetched");
    assert.ok(!content.includes(image.layers[0].digest), "eStargz layer not fetched");
    const info = await ctr(["content", "ls"]);
    assert.match(
      info.split("\n").find((l) => l.startsWith(image.layers[1].digest)) ?? "",
      /containerd\.io\/uncompressed=sha256:/,
    );
    assert.equal(await runImage(image.ref, "cat /data/hello"), "hello rpull\n");
  });

  it("pulls and runs a plain image (every layer applied by containerd)", async () => {
    const image = await pushLayers(reg!, "rpull/plain", "v1", [busybox.plain, hello.plain]);
    await rpullOk([image.ref]);
    const content = await ctr(["content", "ls", "-q"]);
    for (const l of image.layers) assert.ok(content.includes(l.digest), `${l.digest} missing`);
    assert.equal(
      await runImage(image.ref, "cat /data/hello; ls /bin/busybox"),
      "hello rpull\n/bin/busybox\n",
    );
  });

  it("two pulls of the same image at once both succeed", async () => {
    const big = layerTar("twice", { "data/twice": `twice ${randomUUID()}\n`.repeat(200_000) });
    const image = await pushLayers(reg!, "rpull/twice", "v1", [busybox.plain, plainLayer(big)]);
    const [a, b] = await Promise.all([rpull([image.ref]), rpull([image.ref])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.match(await runImage(image.ref, "head -c 5 /data/twice"), /^twice/);
  });

  it("pulls a private image with --user, and with the docker config", async () => {
    const own = layerTar("secret", { "secret.txt": `private ${randomUUID()}\n` });
    const layer = await estargzLayer(own);
    const image = await pushLayers(privateReg!, "secret/app", "v1", [busybox.esgz, layer]);
    const denied = await rpull([image.ref]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /rpull .*(401|403|unauthorized|UNAUTHORIZED)/i);
    const [user, password] = Object.entries(privateReg!.users)[0];
    await rpullOk(["--user", `${user}:${password}`, image.ref]);
    assert.match(await runImage(image.ref, "cat /secret.txt"), /^private /);
    // Without :PASSWORD the password is read from stdin (a terminal would be asked, as ctr does).
    const prompted = await rpull(["--user", user, image.ref], {}, ctd!, `${password}\n`);
    assert.equal(prompted.code, 0, prompted.stderr);

    const other = await pushLayers(privateReg!, "secret/other", "v1", [busybox.esgz, hello.esgz]);
    await rpullOk([other.ref], { DOCKER_CONFIG: dockerConfig });
    assert.equal(await runImage(other.ref, "cat /data/hello"), "hello rpull\n");
  });

  it("reaches a registry through a mirror declared only in certs.d (rpull --hosts-dir, the daemon)", async () => {
    const own = await estargzLayer(layerTar("mirrored", { "m.txt": `mirrored ${randomUUID()}\n` }));
    const pushed = await pushLayers(reg!, "rpull/mirrored", "v1", [busybox.esgz, own]);
    const ref = `${MIRRORED}/rpull/mirrored:v1`;
    const before = await snapshots();
    await rpullOk(["--hosts-dir", path.join(dir, "certs.d"), ref]);
    const content = await ctr(["content", "ls", "-q"]);
    assert.ok(content.includes(pushed.manifestDigest));
    assert.ok(!content.includes(pushed.layers[1].digest), "the new layer was not downloaded");
    const added = [...(await snapshots()).keys()].filter((k) => !before.has(k));
    assert.equal(added.length, 1);
    assert.ok(await isRemote(added[0]), "the daemon mounted the layer through the mirror");
    assert.match(await runImage(ref, "cat /m.txt"), /^mirrored /);
  });

  it("pulls from an HTTPS registry that requires client certificates (ca + client)", async () => {
    const own = layerTar("tls", { "tls.txt": `over tls ${randomUUID()}\n` });
    const layer = await estargzLayer(own);
    // Pushed over plain HTTP; the HTTPS registry serves the same storage.
    await pushLayers(reg!, "rpull/tls", "v1", [busybox.esgz, layer]);
    const ref = `${tlsReg!.host}/rpull/tls:v1`;
    const before = await snapshots();
    const prepares = daemon!.logs().split('"remote-snapshot-prepared":"true"').length;
    await rpullOk(["--config", configFile, ref]);
    const added = [...(await snapshots()).keys()].filter((k) => !before.has(k));
    assert.equal(added.length, 1, "the new layer got a snapshot");
    assert.ok(await isRemote(added[0]), "the daemon mounted it over TLS");
    assert.equal(
      daemon!.logs().split('"remote-snapshot-prepared":"true"').length,
      prepares + 1,
    );
    assert.match(await runImage(ref, "cat /tls.txt"), /^over tls /);
  });

  it("fails clearly when the registry is down and leaves nothing behind", async () => {
    const before = [await ctr(["images", "ls", "-q"]), await ctr(["content", "ls", "-q"])];
    const r = await rpull([`127.0.0.1:${await closedPort()}/rpull/gone:v1`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /rpull 127\.0\.0\.1:\d+\/rpull\/gone:v1: .*connection failed/);
    assert.deepEqual(
      [await ctr(["images", "ls", "-q"]), await ctr(["content", "ls", "-q"])],
      before,
    );
    assert.doesNotMatch(await ctr(["leases", "ls", "-q"]), /stargz-rpull/);
  });

  it("fails clearly when containerd is not there, before downloading anything", async () => {
    const r = await rpull([
      "--address",
      path.join(dir, "none.sock"),
      `${reg!.host}/rpull/app:esgz`,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /containerd at .*none\.sock is not reachable/);
  });

  it("a layer that fails mid-pull leaves no image and, once the lease is gone, no content", async () => {
    const own = layerTar("broken", { "broken.txt": `broken ${randomUUID()}\n` });
    const image = await pushLayers(reg!, "rpull/broken", "v1", [busybox.plain, plainLayer(own)]);
    // Remove the second layer's data from the registry's storage: the manifest still resolves.
    const hex = image.layers[1].digest.slice("sha256:".length);
    const blobDir = path.join(reg!.dir, "storage/docker/registry/v2/blobs/sha256", hex.slice(0, 2));
    fs.rmSync(path.join(blobDir, hex), { recursive: true, force: true });
    const r = await rpull([image.ref]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, new RegExp(`rpull ${image.ref.replace(/[.]/g, "\\.")}: .*blob`));
    assert.ok(!(await ctr(["images", "ls", "-q"])).includes(image.ref));
    assert.doesNotMatch(await ctr(["leases", "ls", "-q"]), /stargz-rpull/);
    // rpull deletes a failed pull's lease synchronously: containerd has collected it already.
    assert.ok(!(await ctr(["content", "ls", "-q"])).includes(image.manifestDigest));
  });
});

describe("stargz rpull with containerd's CRI plugin loaded", () => {
  it("pulls with the CRI labels (--use-containerd-labels) and runs the image", async () => {
    const sub = path.join(dir, "cri");
    fs.mkdirSync(sub);
    const criDaemon = await startStargz({ dir: sub });
    let criCtd: Containerd | undefined;
    try {
      criCtd = await startContainerd({ dir: sub, snapshotterAddress: criDaemon.address });
      const image = await pushLayers(reg!, "rpull/cri", "v1", [busybox.esgz, hello.esgz]);
      await rpullOk(["--use-containerd-labels", image.ref], {}, criCtd);
      const content = await criCtd.ctrOk(["content", "ls", "-q"], { namespace: NS });
      for (const l of image.layers) assert.ok(!content.includes(l.digest), `${l.digest} fetched`);
      assert.match(criDaemon.logs(), /cri\.image-ref|remote-snapshot-prepared":"true/);
      assert.equal(await runImage(image.ref, "cat /data/hello", criCtd), "hello rpull\n");
    } finally {
      await criCtd?.stop();
      await criDaemon.stop();
    }
  });
});
