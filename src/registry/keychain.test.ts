import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { chainKeychains, dockerConfigKeychain, staticKeychain } from "./keychain.ts";

let dir: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-keychain-"));
});

after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function configDir(name: string, config: unknown): Promise<string> {
  const d = path.join(dir, name);
  await fs.mkdir(d, { recursive: true });
  await fs.writeFile(path.join(d, "config.json"), JSON.stringify(config));
  return d;
}

describe("dockerConfigKeychain", () => {
  it("reads auths entries: base64 auth, username/password, identity and registry tokens", async () => {
    const k = dockerConfigKeychain({
      configDir: await configDir("auths", {
        auths: {
          "https://index.docker.io/v1/": {
            auth: Buffer.from("hub:pw:with:colons").toString("base64"),
          },
          "ghcr.io": { username: "u", password: "p" },
          "https://quay.io/v2/": { identitytoken: "refresh-me" },
          "r.example.com:5000": { registrytoken: "bearer-me" },
        },
      }),
    });
    for (const host of ["docker.io", "registry-1.docker.io", "index.docker.io"]) {
      assert.deepEqual(await k.get(host), { username: "hub", password: "pw:with:colons" }, host);
    }
    assert.deepEqual(await k.get("ghcr.io"), { username: "u", password: "p" });
    assert.deepEqual(await k.get("quay.io"), { identityToken: "refresh-me" });
    assert.deepEqual(await k.get("r.example.com:5000"), { registryToken: "bearer-me" });
    assert.equal(await k.get("r.example.com"), undefined);
  });

  it("asks credential helpers with docker.io as https://index.docker.io/v1/", async () => {
    const bin = path.join(dir, "bin");
    await fs.mkdir(bin, { recursive: true });
    await fs.writeFile(
      path.join(bin, "docker-credential-kc"),
      [
        "#!/bin/sh",
        "read -r server",
        'case "$server" in',
        `  https://index.docker.io/v1/) echo '{"Username":"<token>","Secret":"idt"}' ;;`,
        `  other.io) echo '{"Username":"o","Secret":"s"}' ;;`,
        "  *) echo 'credentials not found in native keychain'; exit 1 ;;",
        "esac",
      ].join("\n") + "\n",
      { mode: 0o755 },
    );
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };
    const k = dockerConfigKeychain({
      configDir: await configDir("helpers", {
        credHelpers: { "docker.io": "kc", "other.io": "kc" },
        auths: { "plain.io": { username: "a", password: "b" } },
      }),
      env,
    });
    assert.deepEqual(await k.get("registry-1.docker.io"), { identityToken: "idt" });
    assert.deepEqual(await k.get("other.io"), { username: "o", password: "s" });
    assert.deepEqual(await k.get("plain.io"), { username: "a", password: "b" });
    const store = dockerConfigKeychain({
      configDir: await configDir("store", { credsStore: "kc" }),
      env,
    });
    assert.deepEqual(await store.get("docker.io"), { identityToken: "idt" });
    assert.equal(await store.get("unknown.io"), undefined);
  });

  it("has no credentials without a config file and rejects a malformed one", async () => {
    assert.equal(
      await dockerConfigKeychain({ configDir: path.join(dir, "none") }).get("x.io"),
      undefined,
    );
    const bad = await configDir("bad", { auths: { "x.io": { auth: 42 } } });
    await assert.rejects(dockerConfigKeychain({ configDir: bad }).get("x.io"), /docker config/);
  });
});

describe("static and chained keychains", () => {
  it("returns the first keychain's credentials, naming it", async () => {
    const k = chainKeychains([
      staticKeychain({ "a.io": { username: "1" } }),
      {
        name: "two",
        get: staticKeychain({
          "a.io": { username: "2" },
          "https://index.docker.io/v1/": { username: "h" },
        }).get,
      },
    ]);
    assert.deepEqual(await k.get("a.io"), { username: "1", keychain: "static" });
    assert.deepEqual(await k.get("docker.io"), { username: "h", keychain: "two" });
    assert.equal(await k.get("b.io"), undefined);
  });

  it("skips a keychain that fails and reports it", async () => {
    const failed: string[] = [];
    const k = chainKeychains([
      { name: "broken", get: () => Promise.reject(new Error("boom")) },
      staticKeychain({ "a.io": { username: "1" } }),
    ], (name, err) => failed.push(`${name}: ${(err as Error).message}`));
    assert.deepEqual(await k.get("a.io"), { username: "1", keychain: "static" });
    assert.deepEqual(failed, ["broken: boom"]);
  });
});
