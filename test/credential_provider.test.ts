/**
 * kubelet credential provider plugins against a real password-protected registry: a small exec
 * plugin (a shell script speaking credentialprovider.kubelet.k8s.io/v1, counting its runs in a
 * file) gives the password, and its cache duration is honoured.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import {
  type CredentialProviderKeychain,
  credentialProviderKeychain,
} from "../src/registry/credential_provider.ts";
import { RegistryClient } from "../src/registry/mod.ts";
import { pushImage, startRegistry, type TestRegistry } from "./_registry.ts";

let dir: string;
let reg: TestRegistry;
let ref: string;

const PLUGIN = `#!/bin/sh
# Reads the request, records it and the run, answers with the password it was given in env.
cat > "$PLUGIN_DIR/request.json"
echo run >> "$PLUGIN_DIR/calls"
cat <<EOF
{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse",
 "cacheKeyType":"$CACHE_KEY_TYPE",
 "auth":{"$REGISTRY_PATTERN":{"username":"$PLUGIN_USER","password":"$PLUGIN_PASSWORD"}}}
EOF
`;

async function calls(): Promise<number> {
  try {
    return (await fs.readFile(path.join(dir, "calls"), "utf8")).trim().split("\n").length;
  } catch {
    return 0;
  }
}

/** The keychain of a provider config `name` running the test plugin with `opts`. */
async function providerKeychain(
  name: string,
  opts: { cacheKeyType: string; duration: string; password: string; match?: string },
  now?: () => number,
): Promise<CredentialProviderKeychain> {
  const [user] = Object.keys(reg.users);
  const file = path.join(dir, `${name}.yaml`);
  await fs.writeFile(
    file,
    [
      "apiVersion: kubelet.config.k8s.io/v1",
      "kind: CredentialProviderConfig",
      "providers:",
      "  - name: test-plugin",
      "    matchImages:",
      `      - "${opts.match ?? "127.0.0.*"}"`,
      `    defaultCacheDuration: "${opts.duration}"`,
      "    apiVersion: credentialprovider.kubelet.k8s.io/v1",
      "    env:",
      `      - { name: PLUGIN_DIR, value: "${dir}" }`,
      `      - { name: PLUGIN_USER, value: "${user}" }`,
      `      - { name: PLUGIN_PASSWORD, value: "${opts.password}" }`,
      `      - { name: CACHE_KEY_TYPE, value: "${opts.cacheKeyType}" }`,
      `      - { name: REGISTRY_PATTERN, value: "${reg.host}" }`,
      "",
    ].join("\n"),
  );
  return await credentialProviderKeychain({
    configPath: file,
    binDir: path.join(dir, "bin"),
    ...(now ? { now } : {}),
  });
}

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "sgz-credprov-"));
  await fs.mkdir(path.join(dir, "bin"));
  await fs.writeFile(path.join(dir, "bin", "test-plugin"), PLUGIN, { mode: 0o755 });
  reg = await startRegistry({ auth: "basic" });
  ({ ref } = await pushImage(reg, "private/cp", "v1", {
    layers: [{ data: new TextEncoder().encode("layer") }],
  }));
});

after(async () => {
  await reg.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("kubelet credential provider keychain", () => {
  it("gets the password from the plugin and reuses its answer within the cache duration", async () => {
    await fs.rm(path.join(dir, "calls"), { force: true });
    const [, password] = Object.entries(reg.users)[0]!;
    const keychain = await providerKeychain("ok", {
      cacheKeyType: "Registry",
      duration: "1h",
      password,
    });
    const client = new RegistryClient({ keychain });
    const img = await client.resolve(ref);
    assert.equal(img.layers.length, 1);
    const request = JSON.parse(await fs.readFile(path.join(dir, "request.json"), "utf8"));
    assert.deepEqual(request, {
      apiVersion: "credentialprovider.kubelet.k8s.io/v1",
      kind: "CredentialProviderRequest",
      image: `${reg.host}/private/cp`,
    });
    // A second client (no credentials cached in it) and another repository of the registry.
    await new RegistryClient({ keychain }).resolve(ref);
    assert.deepEqual(await keychain.get(reg.host, "private/other"), {
      username: Object.keys(reg.users)[0],
      password,
    });
    assert.equal(await calls(), 1, "plugin run once within its cache duration");
  });

  it("asks again once the duration is over, and per image with cacheKeyType Image", async () => {
    await fs.rm(path.join(dir, "calls"), { force: true });
    let now = 0;
    const keychain = await providerKeychain("img", {
      cacheKeyType: "Image",
      duration: "10m",
      password: "x",
    }, () => now);
    await keychain.get(reg.host, "a");
    await keychain.get(reg.host, "a");
    await keychain.get(reg.host, "b");
    assert.equal(await calls(), 2);
    now += 10 * 60_000 + 1;
    await keychain.get(reg.host, "a");
    assert.equal(await calls(), 3);
  });

  it("does not run plugins for images their matchImages do not name", async () => {
    await fs.rm(path.join(dir, "calls"), { force: true });
    const keychain = await providerKeychain("nomatch", {
      cacheKeyType: "Global",
      duration: "1h",
      password: "x",
      match: "*.example.io",
    });
    assert.equal(await keychain.get(reg.host, "a"), undefined);
    assert.equal(await calls(), 0);
  });

  it("names the plugin and never the password when the registry refuses its answer", async () => {
    const keychain = await providerKeychain("bad", {
      cacheKeyType: "Global",
      duration: "1h",
      password: "not-the-password",
    });
    await assert.rejects(new RegistryClient({ keychain }).resolve(ref), (err: Error) => {
      assert.match(err.message, /401/);
      assert.match(err.message, /credential-provider keychain/);
      assert.doesNotMatch(err.message, /not-the-password/);
      return true;
    });
  });
});
