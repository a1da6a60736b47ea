import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { runCli, sendSignal, startCli, waitExit, waitFor } from "./_cli.ts";

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-serve-"));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function exists(p: string): boolean {
  return fs.existsSync(p);
}

describe("stargz serve", () => {
  it("listens on a fresh socket directory (0700) and stops cleanly on SIGTERM", async () => {
    const root = path.join(tmp, "a", "root");
    const sock = path.join(tmp, "a", "run", "deep", "stargz.sock");
    const child = startCli(["serve", "--root", root, "--address", sock, "--log-level", "debug"]);
    const done = waitExit(child);
    await waitFor(() => exists(sock), 30_000, "socket");
    assert.ok(fs.statSync(sock).isSocket());
    assert.equal(fs.statSync(path.dirname(sock)).mode & 0o777, 0o700);
    assert.equal(fs.statSync(root).mode & 0o777, 0o700);
    const t0 = Date.now();
    sendSignal(child, "SIGTERM");
    const res = await done;
    assert.equal(res.code, 0, res.stderr);
    assert.ok(Date.now() - t0 < 3000, "stops within 3 s");
    assert.equal(exists(sock), false, "socket removed");
    const lines = res.stderr.trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(lines.every((l) => typeof l.level === "string" && typeof l.time === "string"));
    assert.ok(lines.some((l) => l.msg === "serving" && l.address === sock));
  });

  it("accepts Go-style single-dash flags and SIGINT", async () => {
    const sock = path.join(tmp, "b.sock");
    const child = startCli(["serve", "-root", path.join(tmp, "b-root"), "-address", sock]);
    const done = waitExit(child);
    await waitFor(() => exists(sock), 30_000, "socket");
    sendSignal(child, "SIGINT");
    assert.equal((await done).code, 0);
  });

  it("refuses a socket that a live process serves", async () => {
    const sock = path.join(tmp, "live.sock");
    const live = net.createServer().listen(sock);
    await new Promise((r) => live.once("listening", r));
    try {
      const res = await runCli(["serve", "--root", path.join(tmp, "c-root"), "--address", sock]);
      assert.equal(res.code, 1);
      assert.match(res.stderr, /another process is already serving/);
    } finally {
      await new Promise((r) => live.close(r));
    }
  });

  it("replaces the stale socket of a killed daemon", async () => {
    const sock = path.join(tmp, "stale.sock");
    const args = ["serve", "--root", path.join(tmp, "s-root"), "--address", sock];
    const first = startCli(args);
    const firstDone = waitExit(first);
    await waitFor(() => exists(sock), 30_000, "socket");
    first.kill("SIGKILL");
    await firstDone;
    assert.ok(exists(sock), "a killed daemon leaves its socket behind");
    const second = startCli(args);
    const done = waitExit(second);
    let out = "";
    second.stderr?.on("data", (d) => (out += d));
    await waitFor(() => out.includes('"msg":"serving"'), 30_000, "second daemon");
    await new Promise<void>((resolve, reject) => {
      const c = net.createConnection(sock, () => {
        c.destroy();
        resolve();
      });
      c.once("error", reject);
    });
    sendSignal(second, "SIGTERM");
    assert.equal((await done).code, 0);
  });

  it("fails with one line naming an unusable socket directory and leaves nothing behind", async () => {
    const root = path.join(tmp, "d-root");
    const blocker = path.join(tmp, "file");
    fs.writeFileSync(blocker, "");
    const res = await runCli([
      "serve",
      "--root",
      root,
      "--address",
      path.join(blocker, "x", "s.sock"),
    ]);
    assert.equal(res.code, 1);
    const lines = res.stderr.trim().split("\n");
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0], /socket/);
    assert.match(lines[0], new RegExp(blocker));
    assert.equal(exists(root), false, "root not left behind");
  });

  it("rejects an unknown flag with exit code 2", async () => {
    const res = await runCli(["serve", "--adress", "/tmp/x.sock"]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /flag provided but not defined: -adress/);
  });

  it("rejects a bad log level", async () => {
    const res = await runCli([
      "serve",
      "--log-level",
      "loud",
      "--root",
      path.join(tmp, "e"),
      "--address",
      path.join(tmp, "e.sock"),
    ]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /log-level/);
    assert.equal(exists(path.join(tmp, "e")), false);
  });
});

describe("stargz", () => {
  it("prints version and help", async () => {
    const v = await runCli(["--version"]);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^stargz \d+\.\d+\.\d+ \S+ \((bun|deno|node) /);
    const h = await runCli(["--help"]);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /serve/);
    const sh = await runCli(["serve", "--help"]);
    assert.match(sh.stdout, /--address SOCKET/);
  });

  it("rejects an unknown command", async () => {
    const res = await runCli(["frobnicate"]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /unknown command "frobnicate"/);
  });
});
