import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { HostsDirError, loadHostsDir, parseHostsToml } from "./_hosts_dir.ts";
import { registryHosts } from "./hosts.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-certsd-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));

function write(file: string, text: string): void {
  fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
  fs.writeFileSync(path.join(root, file), text);
}

describe("hosts.toml", () => {
  it("keeps [host] tables in file order, defaults to https and appends /v2", async () => {
    const file = await parseHostsToml(
      [
        'server = "https://registry.example.com"',
        '[host."z-mirror.example.com"]',
        '  capabilities = ["pull"]',
        '[host."http://a-mirror.example.com:5000/prefix"]',
        '  header = { "x-a" = ["1", "2"] }',
        '[host."https://raw.example.com/custom/api"]',
        "  override_path = true",
      ].join("\n"),
      root,
      "hosts.toml",
    );
    const hosts = registryHosts("registry.example.com", {
      hostsDir: { "registry.example.com": file },
    });
    assert.deepEqual(
      hosts.map((h) => `${h.scheme}://${h.host}${h.path}`),
      [
        "https://z-mirror.example.com/v2",
        "http://a-mirror.example.com:5000/prefix/v2",
        "https://raw.example.com/custom/api",
        "https://registry.example.com/v2",
      ],
    );
    assert.deepEqual(hosts[0].capabilities, { pull: true, resolve: false, push: false });
    assert.deepEqual(hosts[1].headers, { "x-a": "1, 2" });
    assert.deepEqual(hosts[3].capabilities, { pull: true, resolve: true, push: true });
    assert.equal(hosts[3].isMirror, false);
  });

  it("puts the config's own mirrors first, then certs.d's, then the origin", async () => {
    const file = await parseHostsToml('[host."certsd-mirror:5000"]\n', root, "hosts.toml");
    const hosts = registryHosts("docker.io", {
      host: { "docker.io": { mirrors: [{ host: "config-mirror" }] } },
      hostsDir: { "docker.io": file },
    });
    assert.deepEqual(hosts.map((h) => h.host), [
      "config-mirror",
      "certsd-mirror:5000",
      "registry-1.docker.io",
    ]);
  });

  it("reads ca and client files relative to the registry's directory", async () => {
    write("reg.example.com/ca.crt", "CA PEM");
    write("reg.example.com/c.cert", "CERT PEM");
    write("reg.example.com/c.key", "KEY PEM");
    write(
      "reg.example.com/hosts.toml",
      'ca = "ca.crt"\nclient = [["c.cert", "c.key"]]\nskip_verify = false\n',
    );
    const dirs = await loadHostsDir(root);
    const [origin] = registryHosts("reg.example.com", { hostsDir: dirs });
    assert.deepEqual(origin.tls, {
      ca: ["CA PEM"],
      client: { cert: "CERT PEM", key: "KEY PEM" },
      skipVerify: false,
    });
  });

  it("maps host_port_ directories, falls back to _default, reads docker-style files", async () => {
    write("local_5000_/hosts.toml", 'server = "https://local:5000"\n');
    write("_default/hosts.toml", '[host."https://everything-mirror"]\n');
    write("docker-style.io/x.crt", "CA");
    write("docker-style.io/me.cert", "C");
    write("docker-style.io/me.key", "K");
    const dirs = await loadHostsDir(root);
    assert.equal(registryHosts("local:5000", { hostsDir: dirs })[0].scheme, "https");
    assert.equal(registryHosts("other.io", { hostsDir: dirs })[0].host, "everything-mirror");
    const [docker] = registryHosts("docker-style.io", { hostsDir: dirs });
    assert.deepEqual(docker.tls, { ca: ["CA"], client: { cert: "C", key: "K" } });
  });

  it("rejects unknown capabilities and unreadable certificates, naming the file", async () => {
    await assert.rejects(
      parseHostsToml('capabilities = ["fetch"]\n', root, "/x/hosts.toml"),
      (e: unknown) =>
        e instanceof HostsDirError && /\/x\/hosts\.toml: capabilities/.test(e.message),
    );
    await assert.rejects(
      parseHostsToml('ca = "missing.crt"\n', root, "/x/hosts.toml"),
      (e: unknown) => e instanceof HostsDirError && /CA certificate .*missing\.crt/.test(e.message),
    );
  });

  it("a missing config_path directory is no hosts at all", async () => {
    assert.deepEqual(await loadHostsDir(path.join(root, "absent")), {});
  });
});
