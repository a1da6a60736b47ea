/**
 * containerd's certs.d (`[resolver] config_path`) through the CLI with real registries: a mirror
 * declared only in hosts.toml is used, and an HTTPS registry (Debian's docker-registry with a
 * test CA that requires client certificates) works with `ca` + `client`, with `skip_verify`, and
 * fails with a clear message with the wrong CA or without a client certificate; `inspect` and
 * `convert` go through the same hosts.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCli } from "./_cli.ts";
import { plainLayer, pushLayers, tarDir } from "./_images.ts";
import { closedPort, makeCertificates, pushImage, startRegistry, testBytes } from "./_registry.ts";
import type { PushedImage, TestCertificates, TestRegistry } from "./_registry.ts";

let dir: string;
let plain: TestRegistry | undefined;
let secure: TestRegistry | undefined;
let certs: TestCertificates;
let otherCa: TestCertificates;
let image: PushedImage;

/** `stargz inspect` with a config whose config_path holds `files` (path → content). */
async function inspect(ref: string, files: Record<string, string>) {
  const root = fs.mkdtempSync(path.join(dir, "certs.d-"));
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  }
  const config = path.join(root, "config.toml");
  fs.writeFileSync(config, `[resolver]\nconfig_path = "${root}"\n`);
  return await runCli(["inspect", "--config", config, ref]);
}

/** containerd's directory name for `host:port`. */
const dirOf = (host: string) => host.replace(/:(\d+)$/, "_$1_");

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-hostsdir-"));
  certs = await makeCertificates(path.join(dir, "pki"));
  otherCa = await makeCertificates(path.join(dir, "pki"), "other");
  plain = await startRegistry();
  image = await pushImage(plain, "hosts/app", "v1", { layers: [{ data: testBytes(4096, 3) }] });
  secure = await startRegistry({
    storage: plain.storage,
    tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.ca },
  });
});

after(async () => {
  await secure?.stop();
  await plain?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("certs.d hosts.toml", () => {
  it("uses a mirror declared only in certs.d", async () => {
    const origin = `127.0.0.1:${await closedPort()}`;
    const r = await inspect(`${origin}/hosts/app:v1`, {
      [`${dirOf(origin)}/hosts.toml`]: `[host."http://${
        plain!.host
      }"]\ncapabilities = ["pull", "resolve"]\n`,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).manifestDigest, image.manifestDigest);
  });

  it("asks a pull-only mirror for content by digest but not to resolve tags", async () => {
    const origin = `127.0.0.1:${await closedPort()}`;
    const files = {
      [`${dirOf(origin)}/hosts.toml`]: `[host."http://${plain!.host}"]\ncapabilities = ["pull"]\n`,
    };
    const byTag = await inspect(`${origin}/hosts/app:v1`, files);
    assert.equal(byTag.code, 1, "the tag is resolved at the (unreachable) origin only");
    assert.match(byTag.stderr, new RegExp(`${origin}: connection failed`));
    const byDigest = await inspect(`${origin}/hosts/app@${image.manifestDigest}`, files);
    assert.equal(byDigest.code, 0, byDigest.stderr);
  });

  it("reaches an HTTPS registry that requires client certificates through ca and client", async () => {
    const r = await inspect(`${secure!.host}/hosts/app:v1`, {
      [`${dirOf(secure!.host)}/hosts.toml`]: [
        `server = "https://${secure!.host}"`,
        `ca = "${certs.ca}"`,
        `client = [["${certs.clientCert}", "${certs.clientKey}"]]`,
      ].join("\n"),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).manifestDigest, image.manifestDigest);
  });

  it("takes ca and client paths relative to the registry's directory; one file may hold both", async () => {
    const d = dirOf(secure!.host);
    const r = await inspect(`${secure!.host}/hosts/app:v1`, {
      [`${d}/hosts.toml`]: `server = "https://${
        secure!.host
      }"\nca = "ca.crt"\nclient = "both.pem"\n`,
      [`${d}/ca.crt`]: fs.readFileSync(certs.ca, "utf8"),
      [`${d}/both.pem`]: fs.readFileSync(certs.clientCert, "utf8") +
        fs.readFileSync(certs.clientKey, "utf8"),
    });
    assert.equal(r.code, 0, r.stderr);
  });

  it("converts an image from and to the HTTPS registry (convert --config)", async () => {
    const root = path.join(dir, "conv");
    fs.mkdirSync(path.join(root, "data"), { recursive: true });
    fs.writeFileSync(path.join(root, "data", "hello"), "hello tls\n");
    tarDir(root, path.join(dir, "conv.tar"));
    await pushLayers(plain!, "hosts/conv", "plain", [plainLayer(path.join(dir, "conv.tar"))]);
    const certsD = fs.mkdtempSync(path.join(dir, "certs.d-"));
    fs.mkdirSync(path.join(certsD, dirOf(secure!.host)));
    fs.writeFileSync(
      path.join(certsD, dirOf(secure!.host), "hosts.toml"),
      `server = "https://${secure!.host}"\nca = "${certs.ca}"\n` +
        `client = [["${certs.clientCert}", "${certs.clientKey}"]]\n`,
    );
    const config = path.join(certsD, "config.toml");
    fs.writeFileSync(config, `[resolver]\nconfig_path = "${certsD}"\n`);
    const r = await runCli([
      "convert",
      "--config",
      config,
      `${secure!.host}/hosts/conv:plain`,
      `${secure!.host}/hosts/conv:esgz`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const inspected = await runCli([
      "inspect",
      "--config",
      config,
      `${secure!.host}/hosts/conv:esgz`,
    ]);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.equal(JSON.parse(inspected.stdout).lazy, true);
  });

  it("skip_verify accepts the server's certificate without its CA", async () => {
    const r = await inspect(`${secure!.host}/hosts/app:v1`, {
      [`${dirOf(secure!.host)}/hosts.toml`]: [
        `server = "https://${secure!.host}"`,
        "skip_verify = true",
        `client = [["${certs.clientCert}", "${certs.clientKey}"]]`,
      ].join("\n"),
    });
    assert.equal(r.code, 0, r.stderr);
  });

  it("fails clearly with the wrong CA, and without a client certificate", async () => {
    const wrong = await inspect(`${secure!.host}/hosts/app:v1`, {
      [`${dirOf(secure!.host)}/hosts.toml`]: [
        `server = "https://${secure!.host}"`,
        `ca = "${otherCa.ca}"`,
        `client = [["${certs.clientCert}", "${certs.clientKey}"]]`,
      ].join("\n"),
    });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /connection failed: .*certs\.d\/<host>\/hosts\.toml/);
    const noClient = await inspect(`${secure!.host}/hosts/app:v1`, {
      [`${dirOf(secure!.host)}/hosts.toml`]: `server = "https://${
        secure!.host
      }"\nca = "${certs.ca}"\n`,
    });
    assert.equal(noClient.code, 1);
    assert.match(noClient.stderr, /connection failed/);
  });

  it("names the file and key of a broken hosts.toml", async () => {
    const r = await inspect(`${secure!.host}/hosts/app:v1`, {
      [`${dirOf(secure!.host)}/hosts.toml`]: `capabilities = ["fetch"]\n`,
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /hosts\.toml: capabilities\.0: /);
  });
});
