import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { loadKubeconfig } from "./_kube_client.ts";

async function kubeconfig(doc: object): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "kubecfg-"));
  await fs.writeFile(path.join(dir, "ca.crt"), "CA PEM");
  await fs.writeFile(path.join(dir, "token"), "tok\n");
  const file = path.join(dir, "config");
  await fs.writeFile(file, JSON.stringify(doc));
  return file;
}

const base = (cluster: object, user: object) => ({
  apiVersion: "v1",
  kind: "Config",
  clusters: [{ name: "c", cluster: { server: "https://10.0.0.1:6443/", ...cluster } }],
  users: [{ name: "u", user }],
  contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
  "current-context": "x",
});

describe("loadKubeconfig", () => {
  it("reads the current context, files relative to the kubeconfig and inline data", async () => {
    const file = await kubeconfig(base(
      { "certificate-authority": "ca.crt" },
      {
        tokenFile: "token",
        "client-certificate-data": Buffer.from("CERT").toString("base64"),
        "client-key-data": Buffer.from("KEY").toString("base64"),
      },
    ));
    assert.deepEqual(await loadKubeconfig(file), {
      server: "https://10.0.0.1:6443",
      ca: "CA PEM",
      cert: "CERT",
      key: "KEY",
      tokenFile: path.join(path.dirname(file), "token"),
    });
  });

  it("refuses what it cannot do safely or at all, naming the file", async () => {
    const insecure = await kubeconfig(base({ "insecure-skip-tls-verify": true }, {}));
    await assert.rejects(loadKubeconfig(insecure), /insecure-skip-tls-verify is not supported/);
    const noCtx = await kubeconfig({ ...base({}, {}), "current-context": "nope" });
    await assert.rejects(loadKubeconfig(noCtx), /config: no context "nope"/);
    const missingCa = await kubeconfig(base({ "certificate-authority": "gone.crt" }, {}));
    await assert.rejects(loadKubeconfig(missingCa), /gone\.crt/);
  });
});
