/**
 * Registry authentication against real `docker-registry` instances: htpasswd basic auth and
 * token auth (JWTs signed by the test's token server), with credentials from static keychains,
 * a docker config file and a `docker-credential-*` helper script.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { setLogSink } from "../src/log/mod.ts";
import {
  dockerConfigKeychain,
  type Keychain,
  RegistryClient,
  staticKeychain,
  UnauthorizedError,
} from "../src/registry/mod.ts";
import {
  type PushedImage,
  pushImage,
  startRegistry,
  testBytes,
  type TestRegistry,
} from "./_registry.ts";

const PASSWORD = "s3cret-Pa55word";
const users = { alice: PASSWORD };
const layer = testBytes(200_000, 21);
const noCreds: Keychain = { get: () => Promise.resolve(undefined) };
const quiet = { maxRetries: 1, minWaitMsec: 10, maxWaitMsec: 100 };

let basicReg: TestRegistry;
let tokenReg: TestRegistry;
let basicImg: PushedImage;
let tokenImg: PushedImage;
let tmp: string;
const logs: string[] = [];
let restoreSink: ((line: string) => void) | undefined;

before(async () => {
  restoreSink = setLogSink((line) => logs.push(line));
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-auth-"));
  [basicReg, tokenReg] = await Promise.all([
    startRegistry({ auth: "basic", users }),
    startRegistry({ auth: "token", users }),
  ]);
  basicImg = await pushImage(basicReg, "team/app", "v1", { layers: [{ data: layer }] });
  tokenImg = await pushImage(tokenReg, "team/app", "v1", { layers: [{ data: layer }] });
});

after(async () => {
  if (restoreSink) setLogSink(restoreSink);
  await basicReg?.stop();
  await tokenReg?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  assert.ok(!logs.some((l) => l.includes(PASSWORD)), "a password reached the logs");
});

function noPassword(e: unknown): boolean {
  return e instanceof Error && !e.message.includes(PASSWORD) && !String(e.stack).includes(PASSWORD);
}

async function readsLayer(c: RegistryClient, reg: TestRegistry, img: PushedImage): Promise<void> {
  const resolved = await c.resolve(`${reg.host}/team/app:v1`);
  assert.equal(resolved.manifestDigest, img.manifestDigest);
  const blob = await c.openBlob(`${reg.host}/team/app`, img.layers[0].digest);
  const got = await blob.readRanges([[0, 10], [150_000, 150_100]]);
  assert.ok(Buffer.from(got[1]).equals(layer.subarray(150_000, 150_100)));
}

describe("basic auth (htpasswd)", () => {
  it("is refused without credentials or with a wrong password, without leaking it", async () => {
    await assert.rejects(
      new RegistryClient({ keychain: noCreds, blob: quiet }).resolve(
        `${basicReg.host}/team/app:v1`,
      ),
      UnauthorizedError,
    );
    const wrong = new RegistryClient({
      keychain: staticKeychain({ [basicReg.host]: { username: "alice", password: "nope" } }),
      blob: quiet,
    });
    await assert.rejects(wrong.resolve(`${basicReg.host}/team/app:v1`), (e: unknown) => {
      assert.ok(e instanceof UnauthorizedError);
      return noPassword(e);
    });
  });

  it("pulls, reads ranges and pushes with credentials from a static keychain", async () => {
    const c = new RegistryClient({
      keychain: staticKeychain({ [basicReg.host]: { username: "alice", password: PASSWORD } }),
    });
    await readsLayer(c, basicReg, basicImg);
    const d = await c.pushBlob(`${basicReg.host}/team/other`, testBytes(1000, 5));
    assert.ok(await c.hasBlob(`${basicReg.host}/team/other`, d.digest));
  });

  it("retries at once with rotated credentials when the old ones are refused", async () => {
    // The keychain hands out a revoked password first, then (rotated) the right one.
    const answers = ["revoked"];
    const c = new RegistryClient({
      keychain: {
        name: "rotating",
        get: () => Promise.resolve({ username: "alice", password: answers.shift() ?? PASSWORD }),
      },
      blob: quiet,
    });
    // Learn the challenge (and have the revoked password refused and kept), then rotate.
    await assert.rejects(c.resolve(`${basicReg.host}/team/app:v1`), UnauthorizedError);
    answers.push(PASSWORD);
    const d = await c.resolve(`${basicReg.host}/team/app:v1`);
    assert.equal(d.layers.length, basicImg.layers.length);
    assert.deepEqual(answers, [], "asked again after the refusal");
  });

  it("takes credentials from a docker config file (auths.auth)", async () => {
    const dir = path.join(tmp, "cfg-auths");
    await fs.mkdir(dir);
    await fs.writeFile(
      path.join(dir, "config.json"),
      JSON.stringify({
        auths: {
          [`http://${basicReg.host}`]: {
            auth: Buffer.from(`alice:${PASSWORD}`).toString("base64"),
          },
        },
      }),
    );
    const c = new RegistryClient({ keychain: dockerConfigKeychain({ configDir: dir }) });
    await readsLayer(c, basicReg, basicImg);
  });

  it("takes credentials from a docker-credential helper (credHelpers and credsStore)", async () => {
    const bin = path.join(tmp, "bin");
    await fs.mkdir(bin, { recursive: true });
    const seen = path.join(tmp, "helper-seen");
    await fs.writeFile(
      path.join(bin, "docker-credential-stargztest"),
      [
        "#!/bin/sh",
        '[ "$1" = get ] || exit 1',
        "read -r server",
        `echo "$server" >> ${seen}`,
        `if [ "$server" = "${basicReg.host}" ]; then`,
        `  printf '{"ServerURL":"%s","Username":"alice","Secret":"${PASSWORD}"}' "$server"`,
        "else",
        "  echo 'credentials not found in native keychain' >&2; exit 1",
        "fi",
      ].join("\n") + "\n",
      { mode: 0o755 },
    );
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };
    for (
      const [name, config] of [
        ["helpers", { credHelpers: { [basicReg.host]: "stargztest" } }],
        ["store", { credsStore: "stargztest" }],
      ] as const
    ) {
      const dir = path.join(tmp, `cfg-${name}`);
      await fs.mkdir(dir);
      await fs.writeFile(path.join(dir, "config.json"), JSON.stringify(config));
      const c = new RegistryClient({ keychain: dockerConfigKeychain({ configDir: dir, env }) });
      await readsLayer(c, basicReg, basicImg);
    }
    const asked = (await fs.readFile(seen, "utf8")).trim().split("\n");
    assert.equal(asked.length, 2, "the helper runs once per client, not once per request");
    assert.ok(asked.every((s) => s === basicReg.host));
  });
});

describe("token auth (JWT)", () => {
  it("pulls anonymously with a token, and caches the token per scope", async () => {
    const ts = tokenReg.tokenServer!;
    const c = new RegistryClient({ keychain: noCreds });
    const before = ts.requests.length;
    await readsLayer(c, tokenReg, tokenImg);
    const blob = await c.openBlob(`${tokenReg.host}/team/app`, tokenImg.layers[0].digest);
    for (let i = 0; i < 5; i++) await blob.read(i * 1000, 1000);
    const fetched = ts.requests.slice(before);
    assert.equal(fetched.length, 1);
    assert.equal(fetched[0].account, undefined);
    assert.deepEqual(fetched[0].scopes, ["repository:team/app:pull"]);
  });

  it("refuses pushes without credentials and accepts them with a password", async () => {
    const anon = new RegistryClient({ keychain: noCreds, blob: quiet });
    await assert.rejects(
      anon.pushBlob(`${tokenReg.host}/team/new`, testBytes(100, 9)),
      UnauthorizedError,
    );
    const c = new RegistryClient({
      keychain: staticKeychain({ [tokenReg.host]: { username: "alice", password: PASSWORD } }),
    });
    const d = await c.pushBlob(`${tokenReg.host}/team/new`, testBytes(100, 9));
    assert.ok(await c.hasBlob(`${tokenReg.host}/team/new`, d.digest));
    const last = tokenReg.tokenServer!.requests.at(-1)!;
    assert.equal(last.account, "alice");
    assert.ok(last.scopes.includes("repository:team/new:pull,push"));
  });

  it("reports a wrong password without leaking it", async () => {
    const c = new RegistryClient({
      keychain: staticKeychain({
        [tokenReg.host]: { username: "alice", password: `${PASSWORD}x` },
      }),
      blob: quiet,
    });
    await assert.rejects(c.resolve(`${tokenReg.host}/team/app:v1`), (e: unknown) => {
      assert.ok(e instanceof UnauthorizedError);
      return noPassword(e);
    });
  });

  it("fetches tokens with an OAuth2 POST when an identity token is configured", async () => {
    const ts = tokenReg.tokenServer!;
    const c = new RegistryClient({
      keychain: staticKeychain({
        [tokenReg.host]: { username: "alice", identityToken: ts.refreshToken },
      }),
    });
    const before = ts.requests.length;
    await readsLayer(c, tokenReg, tokenImg);
    const posts = ts.requests.slice(before).filter((r) => r.method === "POST");
    assert.ok(posts.length >= 1);
    assert.equal(posts[0].grantType, "refresh_token");
    assert.equal(posts[0].status, 200);
  });

  it("re-authenticates on 401 when the registry stops accepting a cached token", async () => {
    const ts = tokenReg.tokenServer!;
    const c = new RegistryClient({ keychain: noCreds });
    const blob = await c.openBlob(`${tokenReg.host}/team/app`, tokenImg.layers[0].digest);
    // The next token is valid for about 2 s at the registry (which allows 60 s of clock skew)
    // while the client is told it lives an hour, so only a 401 can reveal its expiry.
    ts.jwtTtlSec = -58;
    ts.advertisedTtlSec = 3600;
    try {
      const c2 = new RegistryClient({ keychain: noCreds });
      const b2 = await c2.openBlob(`${tokenReg.host}/team/app`, tokenImg.layers[0].digest);
      const issued = ts.requests.length;
      await new Promise((r) => setTimeout(r, 3000));
      ts.jwtTtlSec = 300;
      const got = await b2.read(100, 100);
      assert.ok(Buffer.from(got).equals(layer.subarray(100, 200)));
      assert.equal(ts.requests.length, issued + 1, "one new token after the 401");
    } finally {
      ts.jwtTtlSec = 300;
      ts.advertisedTtlSec = 300;
    }
    await blob.check();
  });
});
