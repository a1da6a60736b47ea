/** End to end: the CLI refuses bad configuration files before creating anything. */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DEFAULT_CONFIG_TOML, defaultConfig, parseConfig } from "../src/config/mod.ts";
import { runCli } from "./_cli.ts";

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-serve-config-"));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

describe("stargz serve --config", () => {
  it("refuses a misspelled key with one line, leaving no root or socket directory", async () => {
    const bad = write("bad.toml", "debug = true\n\n[blob]\nchunk_sise = 100\n");
    const root = path.join(tmp, "r1", "root");
    const sock = path.join(tmp, "s1", "run", "stargz.sock");
    const res = await runCli(["serve", "--config", bad, "--root", root, "--address", sock]);
    assert.notEqual(res.code, 0);
    const lines = res.stderr.trim().split("\n");
    assert.equal(lines.length, 1, res.stderr);
    const entry = JSON.parse(lines[0]);
    assert.equal(entry.level, "error");
    assert.equal(
      entry.msg,
      `${bad}:4: unknown key "blob.chunk_sise" (did you mean "blob.chunk_size"?)`,
    );
    assert.equal(fs.existsSync(path.join(tmp, "r1")), false, "root not created");
    assert.equal(fs.existsSync(path.join(tmp, "s1")), false, "socket directory not created");
  });

  it("refuses a missing explicit config file", async () => {
    const missing = path.join(tmp, "absent.toml");
    const root = path.join(tmp, "r2");
    const sock = path.join(tmp, "s2", "stargz.sock");
    const res = await runCli(["serve", "-config", missing, "-root", root, "-address", sock]);
    assert.notEqual(res.code, 0);
    assert.equal(JSON.parse(res.stderr.trim()).msg, `config file ${missing} does not exist`);
    assert.equal(fs.existsSync(root), false);
    assert.equal(fs.existsSync(path.dirname(sock)), false);
  });
});

describe("stargz config", () => {
  it("default prints the default file", async () => {
    const res = await runCli(["config", "default"]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, DEFAULT_CONFIG_TOML);
    assert.deepEqual(parseConfig(res.stdout, "stdout").config, defaultConfig());
  });

  it("check: warnings on stderr and exit 0; a bad file is one line and exit 1", async () => {
    const good = write("good.toml", "[fuse]\npassthrough = true\n");
    const ok = await runCli(["config", "check", "--config", good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(
      ok.stderr,
      `warning: ${good}:2: ignoring "fuse.passthrough": FUSE passthrough is not implemented\n`,
    );
    const bad = write("wrong-type.toml", "noprefetch = 1\n");
    const res = await runCli(["config", "check", "--config", bad]);
    assert.equal(res.code, 1);
    assert.equal(
      res.stderr,
      `stargz config: ${bad}:1: "noprefetch" must be a boolean (true or false), got the integer 1\n`,
    );
  });

  it("show prints the effective configuration as JSON", async () => {
    const file = write("show.toml", '[[resolver.host."ghcr.io".mirrors]]\nhost = "m.example"\n');
    const res = await runCli(["config", "show", "--config", file]);
    assert.equal(res.code, 0, res.stderr);
    const expected = parseConfig(fs.readFileSync(file, "utf8"), file).config;
    assert.deepEqual(JSON.parse(res.stdout), JSON.parse(JSON.stringify(expected)));
    assert.equal(JSON.parse(res.stdout).resolver.host["ghcr.io"].mirrors[0].host, "m.example");
  });

  it("an unknown action is a usage error", async () => {
    const res = await runCli(["config", "sow"]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /unknown action "sow"/);
  });
});
