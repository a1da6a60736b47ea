/**
 * The kubeconfig and credential provider keychains inside `stargz serve`, with a real
 * containerd 1.6: kubelet's credentials go to containerd as usual (so containerd can read the
 * manifest), and our daemon must find its own for the lazily fetched layers — from a
 * `kubernetes.io/dockerconfigjson` secret served by the test API server for one repository, from
 * a credential provider plugin for another. No docker config anywhere.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupDir, decisionReader, startContainerd, startStargz } from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import { estargzLayer, makeBusyboxRoot, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { dockerConfigSecret, startKubeApi, type TestKubeApi } from "./_kube_api.ts";
import { startRegistry } from "./_registry.ts";
import type { TestRegistry } from "./_registry.ts";

let dir: string;
let reg: TestRegistry | undefined;
/** A registry no keychain knows. */
let unknownReg: TestRegistry | undefined;
let api: TestKubeApi | undefined;
let daemon: StargzProcess | undefined;
let ctd: Containerd | undefined;
let busybox: BuiltLayer;
let username: string;
let password: string;
const savedDockerConfig = process.env.DOCKER_CONFIG;

/** The daemon's `remote-snapshot-prepared` decisions logged since the last call, in order. */
const newDecisions = decisionReader(() => daemon!.logs());

async function uniqueLayer(name: string): Promise<{ layer: BuiltLayer; text: string }> {
  const d = path.join(dir, name);
  fs.mkdirSync(d);
  const text = `${name} ${randomUUID()}\n`;
  fs.writeFileSync(path.join(d, `${name}.txt`), text);
  tarDir(d, path.join(dir, `${name}.tar`));
  return { layer: await estargzLayer(path.join(dir, `${name}.tar`)), text };
}

const run = (ref: string, script: string): Promise<string> =>
  ctd!.runStargz(ref, `kc-${randomUUID().slice(0, 8)}`, ["/bin/sh", "-c", script], {
    timeoutMs: 120_000,
  });

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sgz-kcd-"));
  const root = path.join(dir, "bb");
  makeBusyboxRoot(root);
  tarDir(root, path.join(dir, "busybox.tar"));
  busybox = await estargzLayer(path.join(dir, "busybox.tar"));
  reg = await startRegistry({ auth: "basic" });
  unknownReg = await startRegistry({ auth: "basic" });
  [username, password] = Object.entries(reg.users)[0]!;

  api = await startKubeApi(path.join(dir, "api"));
  await api.kubeconfig(path.join(dir, "kubeconfig"), "cert");
  api.put(dockerConfigSecret("apps", "pull", reg.host, username, password));

  fs.mkdirSync(path.join(dir, "plugins"));
  fs.writeFileSync(
    path.join(dir, "plugins", "test-plugin"),
    `#!/bin/sh\ncat > /dev/null\necho run >> "${dir}/plugin-calls"\n` +
      `echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1",` +
      `"kind":"CredentialProviderResponse","cacheKeyType":"Registry","auth":{"${reg.host}":` +
      `{"username":"${username}","password":"${password}"}}}'\n`,
    { mode: 0o755 },
  );
  fs.writeFileSync(
    path.join(dir, "providers.yaml"),
    [
      "apiVersion: kubelet.config.k8s.io/v1",
      "kind: CredentialProviderConfig",
      "providers:",
      "  - name: test-plugin",
      `    matchImages: ["${reg.host}/viaplugin"]`,
      '    defaultCacheDuration: "1h"',
      "    apiVersion: credentialprovider.kubelet.k8s.io/v1",
      "",
    ].join("\n"),
  );

  const emptyDocker = path.join(dir, "docker");
  fs.mkdirSync(emptyDocker);
  process.env.DOCKER_CONFIG = emptyDocker;
  fs.writeFileSync(
    path.join(dir, "config.toml"),
    [
      "[kubeconfig_keychain]",
      "enable_keychain = true",
      `kubeconfig_path = "${path.join(dir, "kubeconfig")}"`,
      "[credential_provider]",
      `config_path = "${path.join(dir, "providers.yaml")}"`,
      `bin_dir = "${path.join(dir, "plugins")}"`,
      "",
    ].join("\n"),
  );
  daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
  ctd = await startContainerd({ dir, snapshotterAddress: daemon.address });
});

after(async () => {
  await ctd?.stop();
  await daemon?.stop();
  await api?.stop();
  await reg?.stop();
  await unknownReg?.stop();
  if (savedDockerConfig === undefined) delete process.env.DOCKER_CONFIG;
  else process.env.DOCKER_CONFIG = savedDockerConfig;
  await cleanupDir(dir);
});

describe("keychains of stargz serve", () => {
  it("fetches layers with credentials from a Kubernetes secret", async () => {
    const { layer, text } = await uniqueLayer("viasecret");
    const image = await pushLayers(reg!, "viasecret/app", "v1", [busybox, layer]);
    await criPull(ctd!.address, image.ref, { username, password });
    const decisions = newDecisions();
    assert.deepEqual(decisions.map((d) => d.prepared), ["true", "true"], JSON.stringify(decisions));
    assert.equal(await run(image.ref, "cat /viasecret.txt"), text);
    assert.ok(!fs.existsSync(path.join(dir, "plugin-calls")), "the plugin does not match");
  });

  it("fetches layers with credentials from a credential provider plugin", async () => {
    const { layer, text } = await uniqueLayer("viaplugin");
    const image = await pushLayers(reg!, "viaplugin/app", "v1", [busybox, layer]);
    await criPull(ctd!.address, image.ref, { username, password });
    const decisions = newDecisions();
    assert.deepEqual(decisions.map((d) => d.prepared), ["true"], JSON.stringify(decisions));
    assert.equal(await run(image.ref, "cat /viaplugin.txt"), text);
    assert.equal(fs.readFileSync(path.join(dir, "plugin-calls"), "utf8"), "run\n");
  });

  it("names the keychains tried when none has credentials", async () => {
    const { layer } = await uniqueLayer("nowhere");
    const image = await pushLayers(unknownReg!, "nowhere/app", "v1", [busybox, layer]);
    const [user, pw] = Object.entries(unknownReg!.users)[0]!;
    await criPull(ctd!.address, image.ref, { username: user, password: pw });
    const decisions = newDecisions();
    // Only the new layer: containerd reuses the busybox snapshot (same chain ID).
    assert.deepEqual(decisions.map((d) => d.prepared), ["false"]);
    assert.match(
      decisions[0]!.reason!,
      /no credentials for .* in any keychain \(tried credential-provider, kubeconfig, docker-config\)/,
    );
    assert.ok(!daemon!.logs().includes(password));
  });
});
