/**
 * install.sh as a new user runs it: `curl -fsSL <release>/install.sh | sh`, against a local HTTP
 * server serving a release set (binary, .gz, install.sh, SHA256SUMS), with every path private
 * and the non-systemd path (STARGZ_INIT=none: this sandbox boots no systemd). A private
 * containerd 1.6 is restarted by the script through STARGZ_CONTAINERD_RESTART.
 *
 * The release binary is `STARGZ_TEST_BINARY` when set (the smoke script passes the compiled
 * one), else a two-line shell stand-in that runs the source with the current runtime: what is
 * tested here is the script, not the compiler.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { scriptCommand } from "../src/runtime/mod.ts";
import { cleanupDir, containerdConfig, REPO_ROOT, waitUntil } from "./_containerd.ts";

const run = promisify(execFile);
const ARCH = process.arch === "arm64" ? "arm64" : "amd64";
const BINARY = `stargz-linux-${ARCH}`;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A release set in memory: file name → content. */
type Release = Map<string, Uint8Array>;

async function releaseSet(binary: Uint8Array): Promise<Release> {
  const files: Release = new Map([
    [BINARY, binary],
    [`${BINARY}.gz`, gzipSync(binary)],
    ["install.sh", await fs.readFile(path.join(REPO_ROOT, "install.sh"))],
  ]);
  const sums = [...files].map(([name, data]) => `${sha256(data)}  ${name}\n`).join("");
  files.set("SHA256SUMS", new TextEncoder().encode(sums));
  return files;
}

function serve(release: () => Release): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const data = release().get((req.url ?? "/").slice(1));
    if (data) res.writeHead(200).end(data);
    else res.writeHead(404).end();
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

interface Result {
  code: number;
  out: string;
}

describe("install.sh piped from curl (non-systemd, private paths)", () => {
  let dir: string;
  let server: http.Server;
  let release: Release;
  let good: Release;
  let env: NodeJS.ProcessEnv;
  const p = (...parts: string[]) => path.join(dir, ...parts);

  /** `curl -fsSL $URL/install.sh | sh -s -- ARGS`, run from the checkout (it must not matter). */
  async function install(...args: string[]): Promise<Result> {
    const cmd = `curl -fsSL "$STARGZ_RELEASE_URL/install.sh" | sh -s -- ${args.join(" ")}`;
    try {
      const r = await run("sh", ["-c", `${cmd} 2>&1`], { env, cwd: REPO_ROOT, timeout: 120_000 });
      return { code: 0, out: r.stdout };
    } catch (err) {
      const e = err as { code?: number; stdout?: string };
      return { code: e.code ?? 1, out: e.stdout ?? "" };
    }
  }

  const ctr = (...args: string[]) =>
    run("ctr", ["--address", p("ctd", "containerd.sock"), ...args], { timeout: 60_000 });
  const restarts = async () =>
    (await fs.readFile(p("restarts"), "utf8").catch(() => "")).split("\n").filter(Boolean)
      .length;
  const daemonPid = async () => Number(await fs.readFile(p("run", "stargz.pid"), "utf8"));

  before(async () => {
    dir = await fs.mkdtemp("/tmp/sgz-inst-");
    const binary = process.env.STARGZ_TEST_BINARY
      ? await fs.readFile(process.env.STARGZ_TEST_BINARY)
      : new TextEncoder().encode(
        `#!/bin/sh\ncase "$(basename "$0")" in containerd-stargz-grpc) set -- serve "$@" ;; esac\n` +
          `exec ${
            scriptCommand(path.join(REPO_ROOT, "src/main.ts")).map((a) => `'${a}'`).join(" ")
          } "$@"\n`,
      );
    good = await releaseSet(binary);
    release = good;
    server = await serve(() => release);
    // containerd's own config without the plugin: what a fresh machine has.
    await fs.mkdir(p("ctd", "cni", "bin"), { recursive: true });
    await fs.mkdir(p("ctd", "cni", "conf"), { recursive: true });
    const ctdConfig = containerdConfig(p("ctd"), "unused")
      .replace(/\[proxy_plugins\][^]*?\n\n/, "")
      .replace('snapshotter = "stargz"', 'snapshotter = "overlayfs"');
    await fs.writeFile(p("ctd", "config.toml"), ctdConfig);
    // Restarts our private containerd (by its pid file) and records that it did.
    await fs.writeFile(
      p("restart-containerd.sh"),
      `set -e
cd ${dir}
if [ -f ctd.pid ]; then kill $(cat ctd.pid) 2>/dev/null || true
  while kill -0 $(cat ctd.pid) 2>/dev/null; do sleep 0.1; done; fi
rm -f ctd/containerd.sock
setsid containerd --config ctd/config.toml </dev/null >>ctd.log 2>&1 &
echo $! >ctd.pid
i=0; while [ ! -S ctd/containerd.sock ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo restart >>restarts
`,
    );
    env = {
      ...process.env,
      STARGZ_RELEASE_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      PREFIX: p("prefix"),
      STARGZ_CONFIG_DIR: p("etc"),
      STARGZ_ROOT: p("root"),
      STARGZ_ADDRESS: p("run", "s.sock"),
      CONTAINERD_CONFIG: p("ctd", "config.toml"),
      STARGZ_INIT: "none",
      STARGZ_LOG: p("stargz.log"),
      STARGZ_CONTAINERD_RESTART: `sh ${p("restart-containerd.sh")}`,
    };
    await run("sh", [p("restart-containerd.sh")], { env });
    await fs.rm(p("restarts"));
  });

  after(async () => {
    server?.close();
    for (const pidFile of [p("run", "stargz.pid"), p("ctd.pid")]) {
      const pid = Number(await fs.readFile(pidFile, "utf8").catch(() => "0"));
      if (pid > 0) {
        try {
          process.kill(pid, "SIGTERM");
          await waitUntil(
            () => {
              try {
                process.kill(pid, 0);
                return false;
              } catch {
                return true;
              }
            },
            30_000,
            `pid ${pid} to exit`,
          );
        } catch { /* already gone */ }
      }
    }
    await cleanupDir(dir);
  });

  it("refuses a corrupted download, naming the file and both sums; installs nothing", async () => {
    const gz = good.get(`${BINARY}.gz`)!;
    const bad = new Uint8Array(gz);
    bad[bad.length - 9] ^= 0xff; // inside the gzip trailer's CRC: still a download, wrong bytes
    release = new Map(good).set(`${BINARY}.gz`, bad);
    const r = await install();
    assert.notEqual(r.code, 0, r.out);
    assert.match(
      r.out,
      new RegExp(
        `checksum mismatch for ${BINARY}\\.gz: SHA256SUMS says ${sha256(gz)}, the download is ${
          sha256(bad)
        }; nothing installed`,
      ),
    );
    // A .gz that matches but unpacks to another binary is caught by the second sum.
    const other = gzipSync(new TextEncoder().encode("#!/bin/sh\necho not stargz\n"));
    const sums = new TextDecoder().decode(good.get("SHA256SUMS")).replace(
      sha256(gz),
      sha256(other),
    );
    release = new Map(good).set(`${BINARY}.gz`, other).set(
      "SHA256SUMS",
      new TextEncoder().encode(sums),
    );
    const r2 = await install();
    assert.notEqual(r2.code, 0, r2.out);
    assert.match(r2.out, new RegExp(`checksum mismatch for ${BINARY}: SHA256SUMS says`));
    await assert.rejects(fs.stat(p("prefix", "bin", "stargz")), { code: "ENOENT" });
    await assert.rejects(fs.stat(p("etc", "config.toml")), { code: "ENOENT" });
    assert.equal(await restarts(), 0);
    release = good;
  });

  it("installs from the release: binary, config, plugin in containerd, daemon serving", async () => {
    const r = await install();
    assert.equal(r.code, 0, r.out);
    assert.doesNotMatch(r.out, /building/, "piped, it never builds the checkout it runs in");
    assert.deepEqual(
      await fs.readFile(p("prefix", "bin", "stargz")),
      Buffer.from(good.get(BINARY)!),
    );
    assert.equal(await fs.readlink(p("prefix", "bin", "containerd-stargz-grpc")), "stargz");
    const { stdout: defaults } = await run(p("prefix", "bin", "stargz"), ["config", "default"]);
    assert.equal(await fs.readFile(p("etc", "config.toml"), "utf8"), defaults);
    assert.match(
      await fs.readFile(p("ctd", "config.toml"), "utf8"),
      /\[proxy_plugins\.stargz\]\ntype = "snapshot"\naddress = "[^"]*\/run\/s\.sock"/,
    );
    assert.equal(await restarts(), 1, "containerd restarted once, for its changed config");
    const { stdout: plugins } = await ctr("plugins", "ls");
    assert.match(plugins, /io\.containerd\.snapshotter\.v1\s+stargz\s+-\s+ok/);
    // containerd reaches the plugin: an empty snapshot list, not an error.
    await ctr("snapshots", "--snapshotter", "stargz", "ls");
    const { stdout: status } = await run(p("prefix", "bin", "stargz"), [
      "status",
      "--address",
      p("run", "s.sock"),
    ]);
    assert.match(status, new RegExp(`^config ${p("etc", "config.toml")}$`, "m"));
    assert.match(status, new RegExp(`^root   ${p("root")}$`, "m"));
    assert.equal((await fs.stat(p("run", "admin.sock"))).mode & 0o777, 0o600);
  });

  it("a second run changes nothing", async () => {
    const pid = await daemonPid();
    const before = await fs.readFile(p("ctd", "config.toml"), "utf8");
    const r = await install();
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /already installed: nothing changed/);
    assert.equal(await daemonPid(), pid, "the daemon kept running");
    assert.equal(await restarts(), 1, "containerd not restarted");
    assert.equal(await fs.readFile(p("ctd", "config.toml"), "utf8"), before);
  });

  it("--kubernetes makes stargz CRI's snapshotter, restarting containerd once more", async () => {
    const r = await install("--kubernetes");
    assert.equal(r.code, 0, r.out);
    const text = await fs.readFile(p("ctd", "config.toml"), "utf8");
    assert.match(
      text,
      /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\]\nsnapshotter = "stargz"\ndisable_snapshot_annotations = false/,
    );
    assert.equal(await restarts(), 2);
    const { stdout: plugins } = await ctr("plugins", "ls");
    assert.match(plugins, /io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);
  });

  it("--uninstall leaves containerd working without the plugin and keeps the data", async () => {
    const pid = await daemonPid();
    const r = await install("--uninstall");
    assert.equal(r.code, 0, r.out);
    assert.throws(() => process.kill(pid, 0), "the daemon stopped");
    await assert.rejects(fs.stat(p("prefix", "bin", "stargz")), { code: "ENOENT" });
    await assert.rejects(fs.lstat(p("prefix", "bin", "containerd-stargz-grpc")), {
      code: "ENOENT",
    });
    assert.doesNotMatch(await fs.readFile(p("ctd", "config.toml"), "utf8"), /stargz/);
    assert.equal(await restarts(), 3);
    const { stdout: plugins } = await ctr("plugins", "ls");
    assert.doesNotMatch(plugins, /stargz/);
    await ctr("snapshots", "--snapshotter", "overlayfs", "ls");
    await fs.stat(p("etc", "config.toml"));
    await fs.stat(p("root"));
    const purged = await install("--uninstall", "--purge");
    assert.equal(purged.code, 0, purged.out);
    await assert.rejects(fs.stat(p("etc")), { code: "ENOENT" });
    await assert.rejects(fs.stat(p("root")), { code: "ENOENT" });
  });
});
