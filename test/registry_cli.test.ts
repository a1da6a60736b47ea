/**
 * `stargz inspect` and `stargz convert SRC_REF DST_REF` end to end against a real registry:
 * a plain gzip image (an index of two platforms) is converted and pushed, `inspect` then shows
 * every layer as eStargz with its TOC digest, and the pushed layers open lazily through
 * `RemoteBlob` with that TOC digest.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as zlib from "node:zlib";
import { openBlob } from "../src/estargz/mod.ts";
import { MediaType, RegistryClient } from "../src/registry/mod.ts";
import { runCli } from "./_cli.ts";
import { buildTar, randomBytes } from "./estargz_fixtures.ts";
import {
  pushImage,
  pushIndex,
  startFaultProxy,
  startRegistry,
  type TestRegistry,
} from "./_registry.ts";

let reg: TestRegistry;
let authReg: TestRegistry;
let dockerConfig: string;
const toolData = randomBytes(300_000, 5);
const env = () => ({ ...process.env, DOCKER_CONFIG: dockerConfig });
const noCreds = { get: () => Promise.resolve(undefined) };

before(async () => {
  [reg, authReg] = await Promise.all([
    startRegistry(),
    startRegistry({ auth: "basic", users: { bob: "cli-pw" } }),
  ]);
  dockerConfig = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-cli-docker-"));
  await fs.writeFile(
    path.join(dockerConfig, "config.json"),
    JSON.stringify({ auths: { [authReg.host]: { username: "bob", password: "cli-pw" } } }),
  );
  const base = zlib.gzipSync(buildTar([
    { name: "etc/", type: "dir", mode: 0o755 },
    { name: "etc/hostname", type: "reg", data: new TextEncoder().encode("stargz\n") },
  ]));
  const app = zlib.gzipSync(buildTar([
    { name: "bin/", type: "dir", mode: 0o755 },
    { name: "bin/tool", type: "reg", data: toolData, mode: 0o755 },
  ]));
  const amd = await pushImage(reg, "app", "plain-amd64", {
    layers: [{ data: base }, { data: app }],
  });
  const arm = await pushImage(reg, "app", "plain-arm64", {
    layers: [{ data: base }],
    platform: { os: "linux", architecture: "arm64" },
    docker: true,
  });
  await pushIndex(reg, "app", "plain", [
    { image: amd, platform: { os: "linux", architecture: "amd64" } },
    { image: arm, platform: { os: "linux", architecture: "arm64" } },
  ]);
  await pushImage(authReg, "private/app", "v1", { layers: [{ data: base }] });
});

after(async () => {
  await reg?.stop();
  await authReg?.stop();
  if (dockerConfig) await fs.rm(dockerConfig, { recursive: true, force: true });
});

async function inspect(ref: string, ...flags: string[]) {
  const r = await runCli(["inspect", ...flags, ref], env());
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe("stargz inspect and convert", () => {
  it("shows a plain image as not lazily pullable", async () => {
    const out = await inspect(`${reg.host}/app:plain`, "--platform", "linux/amd64");
    assert.equal(out.mediaType, MediaType.ociIndex);
    assert.equal(out.platform, "linux/amd64");
    assert.equal(out.lazy, false);
    assert.equal(out.layers.length, 2);
    for (const l of out.layers) {
      assert.equal(l.estargz, false);
      assert.equal(l.tocDigest, undefined);
      assert.equal(l.mediaType, MediaType.ociLayerGzip);
      assert.match(l.reason, /footer/);
    }
  });

  it("converts every platform, and inspect then shows eStargz layers with TOC digests", async () => {
    const conv = await runCli(
      ["convert", "--chunk-size", "65536", `${reg.host}/app:plain`, `${reg.host}/app:esgz`],
      env(),
    );
    assert.equal(conv.code, 0, conv.stderr);
    const result = JSON.parse(conv.stdout);
    assert.equal(result.mediaType, MediaType.ociIndex);
    assert.equal(result.layers, 2, "the shared base layer is converted once");
    const client = new RegistryClient({ keychain: noCreds });
    for (const platform of ["linux/amd64", "linux/arm64"]) {
      const out = await inspect(`${reg.host}/app:esgz`, "--platform", platform);
      assert.equal(out.platform, platform);
      assert.equal(out.lazy, true, JSON.stringify(out));
      for (const l of out.layers) {
        assert.equal(l.estargz, true);
        assert.equal(l.format, "gzip");
        assert.match(l.tocDigest, /^sha256:[0-9a-f]{64}$/);
      }
      if (platform === "linux/amd64") {
        // The converted layer opens lazily and its content is intact.
        const top = out.layers[1];
        const remote = await client.openBlob(`${reg.host}/app`, top.digest, { size: top.size });
        const esgz = await openBlob(remote, { expectedTocDigest: top.tocDigest });
        const entry = esgz.entry("bin/tool");
        assert.ok(entry);
        const chunk = esgz.chunkAt("bin/tool", 70_000)!;
        const bytes = await esgz.readChunk(chunk);
        assert.ok(
          Buffer.from(bytes).equals(
            toolData.subarray(chunk.chunkOffset, chunk.chunkOffset + chunk.chunkSize),
          ),
        );
      }
    }
    const img = await client.resolve(`${reg.host}/app:esgz`, {
      platform: { os: "linux", architecture: "amd64" },
    });
    assert.equal(img.config.rootfs?.diff_ids.length, 2);
  });

  it("converts a single platform into a plain manifest", async () => {
    const conv = await runCli(
      ["convert", "--platform", "linux/arm64", `${reg.host}/app:plain`, `${reg.host}/app:arm`],
      env(),
    );
    assert.equal(conv.code, 0, conv.stderr);
    assert.equal(JSON.parse(conv.stdout).mediaType, MediaType.ociManifest);
    const out = await inspect(`${reg.host}/app:arm`);
    assert.equal(out.mediaType, MediaType.ociManifest);
    assert.equal(out.platform, "linux/arm64");
    assert.equal(out.lazy, true);
  });

  it("goes through the mirrors of the daemon configuration", async () => {
    const mirror = await startFaultProxy(reg.url);
    try {
      const config = path.join(dockerConfig, "config.toml");
      await fs.writeFile(
        config,
        `[[resolver.host."${reg.host}".mirrors]]\nhost = "${mirror.host}"\n` +
          `header = { "x-from-config" = ["yes"] }\n`,
      );
      const out = await inspect(`${reg.host}/app:esgz`, "--config", config);
      assert.equal(out.layers.length > 0, true);
      assert.ok(mirror.requests.some((r) => r.url.includes("/manifests/esgz")));
      assert.ok(mirror.requests.some((r) => r.url.includes("/blobs/")));
      assert.ok(mirror.requests.every((r) => r.headers["x-from-config"] === "yes"));
      const missing = await runCli([
        "inspect",
        "--config",
        `${config}.nope`,
        `${reg.host}/app:esgz`,
      ]);
      assert.equal(missing.code, 1);
    } finally {
      await mirror.stop();
    }
  });

  it("uses the docker config for credentials and fails clearly on errors", async () => {
    const out = await inspect(`${authReg.host}/private/app:v1`);
    assert.equal(out.layers.length, 1);
    const denied = await runCli(["inspect", `${authReg.host}/private/app:v1`], {
      ...process.env,
      DOCKER_CONFIG: path.join(dockerConfig, "missing"),
    });
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /401|UNAUTHORIZED|unauthorized/i);
    assert.ok(!denied.stderr.includes("cli-pw"));
    const missing = await runCli(["inspect", `${reg.host}/app:nope`], env());
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /MANIFEST_UNKNOWN|404/);
    const bad = await runCli(["inspect", "Bad/Ref"], env());
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid reference/);
    const usage = await runCli(["inspect"], env());
    assert.equal(usage.code, 2);
  });
});
