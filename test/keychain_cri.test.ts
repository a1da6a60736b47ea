/**
 * The CRI keychain end to end: a registry that wants a password (htpasswd), no docker config
 * anywhere, a real containerd 1.6 with CRI, and our daemon proxying the CRI image service to
 * containerd. The test plays kubelet and sends `PullImage` with the credentials to OUR socket:
 * the eStargz layers must become remote snapshots fetched with those credentials, survive a
 * restart of the daemon, and the password must not show in logs, admin API or metrics.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  adminText,
  cleanupDir,
  decisionReader,
  startContainerd,
  startStargz,
  waitUntil,
} from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull, criRemove } from "./_cri.ts";
import { estargzLayer, makeBusyboxRoot, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { startRegistry } from "./_registry.ts";
import type { PushedImage, TestRegistry } from "./_registry.ts";

let dir: string;
let reg: TestRegistry | undefined;
let daemon: StargzProcess | undefined;
let ctd: Containerd | undefined;
let busybox: BuiltLayer;
let secretLayer: BuiltLayer;
let image: PushedImage;
let username: string;
let password: string;
const secretText = `private ${randomUUID()}\n`;
const savedDockerConfig = process.env.DOCKER_CONFIG;

/** The daemon's `remote-snapshot-prepared` decisions logged since the last call, in order. */
const newDecisions = decisionReader(() => daemon!.logs());

const admin = (p: string): Promise<string> => adminText(path.join(dir, "admin.sock"), p);

const credentialsFile = () => path.join(dir, "stargz-root", "cri-credentials.json");

const run = (ref: string, script: string): Promise<string> =>
  ctd!.runStargz(ref, `cri-${randomUUID().slice(0, 8)}`, ["/bin/sh", "-c", script], {
    timeoutMs: 120_000,
  });

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sgz-crik-"));
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  tarDir(root, path.join(dir, "busybox.tar"));
  const secret = path.join(dir, "secret");
  fs.mkdirSync(secret);
  fs.writeFileSync(path.join(secret, "secret.txt"), secretText);
  tarDir(secret, path.join(dir, "secret.tar"));
  busybox = await estargzLayer(path.join(dir, "busybox.tar"));
  secretLayer = await estargzLayer(path.join(dir, "secret.tar"));

  reg = await startRegistry({ auth: "basic" });
  [username, password] = Object.entries(reg.users)[0]!;
  image = await pushLayers(reg, "private/app", "v1", [busybox, secretLayer]);

  // No credentials anywhere but in the CRI requests.
  const emptyDocker = path.join(dir, "docker");
  fs.mkdirSync(emptyDocker);
  process.env.DOCKER_CONFIG = emptyDocker;
  // containerd is started after us: the proxy must connect lazily.
  const containerdSocket = path.join(dir, "ctd", "containerd.sock");
  fs.writeFileSync(
    path.join(dir, "config.toml"),
    [
      "[admin]",
      `address = "${path.join(dir, "admin.sock")}"`,
      "[cri_keychain]",
      "enable_keychain = true",
      `image_service_path = "${containerdSocket}"`,
      "",
    ].join("\n"),
  );
  daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
  ctd = await startContainerd({ dir, snapshotterAddress: daemon.address });
  assert.equal(ctd.address, containerdSocket);
});

after(async () => {
  await ctd?.stop();
  await daemon?.stop();
  await reg?.stop();
  if (savedDockerConfig === undefined) delete process.env.DOCKER_CONFIG;
  else process.env.DOCKER_CONFIG = savedDockerConfig;
  await cleanupDir(dir);
});

describe("CRI keychain with containerd", () => {
  it("pulls through our socket with kubelet's credentials and mounts every layer remotely", async () => {
    const imageRef = await criPull(daemon!.address, image.ref, { username, password });
    assert.match(imageRef, /^sha256:/);
    const decisions = newDecisions();
    assert.deepEqual(decisions.map((d) => d.prepared), ["true", "true"], JSON.stringify(decisions));
    const content = await ctd!.ctrOk(["content", "ls", "-q"], { namespace: "k8s.io" });
    for (const l of image.layers) assert.ok(!content.includes(l.digest), `${l.digest} fetched`);
    assert.equal(await run(image.ref, "cat /secret.txt"), secretText);
    assert.equal(fs.statSync(credentialsFile()).mode & 0o777, 0o600);
  });

  it("reads the restored layers after a restart (credentials kept under --root)", async () => {
    assert.equal(await daemon!.stop(), 0);
    daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
    // containerd redials our socket with a backoff; on a loaded machine its first dial may time
    // out. Wait until it reaches the snapshotter again.
    await waitUntil(
      async () =>
        (await ctd!.ctr(["snapshots", "--snapshotter", "stargz", "ls"], { namespace: "k8s.io" }))
          .code === 0,
      60_000,
      "containerd reconnected to the snapshotter",
    );
    // A file the first run never read: it must come from the registry, with the credentials.
    assert.match(await run(image.ref, "ls /bin | wc -l; cat /secret.txt"), /\d+\nprivate /);
    const restore = JSON.parse(await admin("/v1/restore"));
    assert.deepEqual(restore.failed, []);
  });

  it("fails a pull with wrong credentials with containerd's error", async () => {
    const other = await pushLayers(reg!, "private/other", "v1", [busybox, secretLayer]);
    await assert.rejects(
      criPull(daemon!.address, other.ref, { username, password: "wrong-password" }),
      (err: Error & { code?: number }) => {
        assert.match(err.message, /401 Unauthorized|unauthorized/i);
        assert.match(err.message, /failed to pull and unpack image|failed to resolve/);
        return true;
      },
    );
  });

  it("never shows the password in logs, admin API or metrics", async () => {
    for (const p of ["/v1/layers", "/v1/cache", "/v1/snapshots", "/v1/restore", "/metrics"]) {
      assert.ok(!(await admin(p)).includes(password), p);
    }
    assert.ok(!daemon!.logs().includes(password));
    assert.ok(!daemon!.logs().includes(Buffer.from(`${username}:${password}`).toString("base64")));
  });

  it("drops the credentials once no snapshot of the image remains", async () => {
    assert.match(fs.readFileSync(credentialsFile(), "utf8"), /private\/app/);
    // Through our socket, as kubelet's image garbage collection would.
    await criRemove(daemon!.address, image.ref);
    await waitUntil(
      () => Promise.resolve(!fs.readFileSync(credentialsFile(), "utf8").includes("private/app")),
      60_000,
      "credentials dropped",
    ).catch(async (err) => {
      const snaps = await ctd!.ctrOk(["snapshots", "--snapshotter", "stargz", "ls"], {
        namespace: "k8s.io",
      });
      throw new Error(`${err.message}; snapshots left:\n${snaps}`);
    });
  });
});
