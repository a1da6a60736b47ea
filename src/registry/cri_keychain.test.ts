import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { jwtExpiry } from "./auth.ts";
import { CriKeychain, imageKey } from "./cri_keychain.ts";

const none = {
  username: "",
  password: "",
  auth: "",
  server_address: "",
  identity_token: "",
  registry_token: "",
};

function jwt(claims: object): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "none" })}.${part(claims)}.sig`;
}

async function tmpFile(): Promise<string> {
  return path.join(await fs.mkdtemp(path.join(os.tmpdir(), "crik-")), "creds.json");
}

describe("CRI keychain", () => {
  it("keys credentials by registry and repository", async () => {
    assert.equal(imageKey("busybox"), "docker.io/library/busybox");
    assert.equal(imageKey("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
    const k = await CriKeychain.open(await tmpFile());
    await k.duringPull("reg.io/a/b:v1", { ...none, username: "u", password: "p" }, async () => {
      assert.deepEqual(await k.get("reg.io", "a/b"), { username: "u", password: "p" });
      assert.equal(await k.get("reg.io", "a/c"), undefined, "another repository");
      assert.equal(await k.get("mirror.io", "a/b"), undefined, "another host");
      assert.equal(await k.get("reg.io"), undefined, "no repository");
    });
    // Docker Hub's registry host and the auth field (base64 user:password).
    await k.duringPull(
      "busybox",
      { ...none, auth: Buffer.from("x:y").toString("base64") },
      () => Promise.resolve(),
    );
    assert.deepEqual(await k.get("registry-1.docker.io", "library/busybox"), {
      username: "x",
      password: "y",
    });
  });

  it("keeps them in a 0600 file that a new instance reads", async () => {
    const file = await tmpFile();
    const k = await CriKeychain.open(file);
    await k.duringPull("r.io/app", { ...none, identity_token: "idt" }, () => Promise.resolve());
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    const again = await CriKeychain.open(file);
    assert.deepEqual(await again.get("r.io", "app"), { identityToken: "idt" });
    await fs.writeFile(file, "{}");
    await assert.rejects(CriKeychain.open(file), /not a CRI credentials file/);
  });

  it("puts the previous credentials back when a pull fails", async () => {
    const k = await CriKeychain.open(await tmpFile());
    await k.duringPull("r.io/app", { ...none, password: "good" }, () => Promise.resolve());
    await assert.rejects(
      k.duringPull(
        "r.io/app",
        { ...none, password: "bad" },
        () => Promise.reject(new Error("401")),
      ),
      /401/,
    );
    assert.deepEqual(await k.get("r.io", "app"), { password: "good" });
  });

  it("does not use a registry token after its JWT exp", async () => {
    let now = 1_000_000_000_000;
    const token = jwt({ exp: now / 1000 + 60 });
    assert.equal(jwtExpiry(token), now + 60_000);
    assert.equal(jwtExpiry("opaque-token"), undefined);
    const k = await CriKeychain.open(await tmpFile(), () => now);
    await k.duringPull("r.io/app", { ...none, registry_token: token }, () => Promise.resolve());
    assert.deepEqual(await k.get("r.io", "app"), { registryToken: token });
    now += 61_000;
    assert.equal(await k.get("r.io", "app"), undefined);
    await k.sweep(["r.io/app:v1"]);
    assert.deepEqual(k.keys(), [], "an entry with nothing usable left is dropped");
  });

  it("drops credentials of images without snapshots, but not during their pull", async () => {
    const k = await CriKeychain.open(await tmpFile());
    await k.duringPull("r.io/kept", { ...none, password: "1" }, () => Promise.resolve());
    await k.duringPull("r.io/gone", { ...none, password: "2" }, () => Promise.resolve());
    await k.duringPull("r.io/pulling", { ...none, password: "3" }, async () => {
      await k.sweep(["r.io/kept@sha256:" + "a".repeat(64), "not a reference!"]);
      assert.deepEqual(k.keys().sort(), ["r.io/kept", "r.io/pulling"]);
    });
  });
});
