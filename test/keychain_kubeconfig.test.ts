/**
 * The kubeconfig keychain against a test API server (test/_kube_api.ts: TLS with its own CA,
 * bearer token or client certificate, list + watch of secrets, 410 Gone) that Debian's real
 * `kubectl` is checked against first, and a real password-protected registry.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { Logger } from "../src/log/mod.ts";
import { kubeconfigKeychain } from "../src/registry/kubeconfig_keychain.ts";
import { RegistryClient } from "../src/registry/mod.ts";
import { waitUntil } from "./_containerd.ts";
import { dockerConfigSecret, startKubeApi, type TestKubeApi } from "./_kube_api.ts";
import { pushImage, startRegistry, type TestRegistry } from "./_registry.ts";

let dir: string;
let api: TestKubeApi;
let reg: TestRegistry;
let ref: string;
const log = new Logger({ test: "kubeconfig" });
const users = { alice: "alice-pw", bob: "bob-pw" };

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "sgz-kube-"));
  api = await startKubeApi(path.join(dir, "api"));
  reg = await startRegistry({ auth: "basic", users });
  ({ ref } = await pushImage(reg, "private/kube", "v1", {
    layers: [{ data: new TextEncoder().encode("layer") }],
  }));
});

after(async () => {
  await api.stop();
  await reg.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("test API server", () => {
  it("is what kubectl expects: kubectl get secrets -A -w sees the same events", async () => {
    const kc = path.join(dir, "kubectl.conf");
    await api.kubeconfig(kc, "token");
    // Credentials for another registry: these secrets must not matter to the tests below.
    api.put(dockerConfigSecret("default", "before", "elsewhere.io", "alice", "x"));
    const child = spawn("kubectl", [
      "--kubeconfig",
      kc,
      "get",
      "secrets",
      "-A",
      "-w",
      "--output-watch-events",
      "-o",
      "custom-columns=EVENT:.type,NS:.object.metadata.namespace,NAME:.object.metadata.name," +
      "RV:.object.metadata.resourceVersion",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    try {
      await waitUntil(() => out.includes("before"), 30_000, `kubectl list: ${out}`);
      await waitUntil(() => api.watchCount() > 0, 30_000, "kubectl watch");
      api.put(dockerConfigSecret("kube-system", "after", "elsewhere.io", "alice", "y"));
      api.put(dockerConfigSecret("default", "before", "elsewhere.io", "alice", "z"));
      api.remove("kube-system", "after");
      await waitUntil(() => /DELETED\s+kube-system\s+after/.test(out), 30_000, `events: ${out}`);
    } finally {
      child.kill();
    }
    // The list (as ADDED), then the watched events, each with the server's resourceVersion.
    const rows = out.trim().split("\n").slice(1).map((l) => l.trim().split(/\s+/).join(" "));
    const rv = Number(rows[0]!.split(" ")[3]);
    assert.deepEqual(rows, [
      `ADDED default before ${rv}`,
      `ADDED kube-system after ${rv + 1}`,
      `MODIFIED default before ${rv + 2}`,
      `DELETED kube-system after ${rv + 3}`,
    ]);
    api.remove("default", "before");
  });
});

describe("kubeconfig keychain", () => {
  it("uses a secret created after start for the next pull, and a rotated one instead of the old", async () => {
    const kc = path.join(dir, "token.conf");
    await api.kubeconfig(kc, "token");
    const keychain = kubeconfigKeychain({ kubeconfigPath: kc, log });
    try {
      await keychain.listed();
      const client = new RegistryClient({ keychain });
      await assert.rejects(client.resolve(ref), /401.*no credentials.*kubeconfig/);

      api.put(dockerConfigSecret("apps", "pull", reg.host, "alice", users.alice));
      await waitUntil(() => keychain.secrets().includes("apps/pull"), 30_000, "secret watched");
      assert.equal((await client.resolve(ref)).layers.length, 1);

      // Rotation: the same secret now holds other (wrong) credentials, then right ones again.
      api.put(dockerConfigSecret("apps", "pull", reg.host, "alice", "revoked"));
      await waitUntil(
        async () => (await keychain.get(reg.host))?.password === "revoked",
        30_000,
        "rotation seen",
      );
      const rotated = new RegistryClient({ keychain });
      await assert.rejects(
        rotated.resolve(ref),
        (err: Error) => {
          assert.match(err.message, /from the kubeconfig keychain were refused/);
          assert.doesNotMatch(err.message, /revoked|alice-pw/);
          return true;
        },
      );
      api.put(dockerConfigSecret("apps", "pull", reg.host, "bob", users.bob));
      await waitUntil(
        async () => (await keychain.get(reg.host))?.username === "bob",
        30_000,
        "second rotation seen",
      );
      // The client that was refused asks the keychain again and gets the new credentials.
      assert.equal((await rotated.resolve(ref)).layers.length, 1);
    } finally {
      keychain.close();
    }
  });

  it("lists again after 410 Gone and after a dropped watch", async () => {
    const kc = path.join(dir, "cert.conf");
    await api.kubeconfig(kc, "cert");
    const keychain = kubeconfigKeychain({ kubeconfigPath: kc, log, maxBackoffMs: 200 });
    try {
      await keychain.listed();
      await waitUntil(() => api.watchCount() > 0, 30_000, "watching");
      // History gone and the stream cut: the re-watch from our resourceVersion gets 410.
      api.put(dockerConfigSecret("apps", "gone", reg.host, "alice", users.alice));
      await waitUntil(() => keychain.secrets().includes("apps/gone"), 30_000, "watched");
      const relisted = keychain.listed();
      api.compact();
      api.dropWatches();
      await relisted;
      assert.ok(keychain.secrets().includes("apps/gone"));
      // A secret deleted while nobody watched is gone after the list.
      const again = keychain.listed();
      api.compact();
      api.dropWatches();
      api.remove("apps", "gone");
      await again;
      assert.ok(!keychain.secrets().includes("apps/gone"));
    } finally {
      keychain.close();
    }
  });

  it("authenticates with an exec credential plugin", async () => {
    const plugin = path.join(dir, "exec-plugin.sh");
    await fs.writeFile(
      plugin,
      `#!/bin/sh\necho run >> "${dir}/exec-calls"\n` +
        `printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",` +
        `"status":{"token":"%s"}}' "${api.token}"\n`,
      { mode: 0o755 },
    );
    const kc = path.join(dir, "exec.conf");
    await api.kubeconfig(kc, { exec: plugin });
    const keychain = kubeconfigKeychain({ kubeconfigPath: kc, log });
    try {
      await keychain.listed();
      assert.match(await fs.readFile(path.join(dir, "exec-calls"), "utf8"), /run/);
    } finally {
      keychain.close();
    }
  });

  it("picks up a kubeconfig that appears after start, without blocking start", async () => {
    const kc = path.join(dir, "later", "config");
    api.put(dockerConfigSecret("apps", "later", reg.host, "alice", users.alice));
    const keychain = kubeconfigKeychain({ kubeconfigPath: kc, log, pollMs: 100 });
    try {
      assert.equal(await keychain.get(reg.host), undefined);
      await fs.mkdir(path.dirname(kc));
      await api.kubeconfig(kc, "token");
      await keychain.listed();
      assert.equal((await keychain.get(reg.host))?.username, "alice");
    } finally {
      keychain.close();
      api.remove("apps", "later");
    }
  });
});
