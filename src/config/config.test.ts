import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse as parseToml } from "smol-toml";
import {
  ConfigError,
  DEFAULT_CONFIG_TOML,
  defaultConfig,
  loadConfig,
  parseConfig,
  parseSize,
  UNIMPLEMENTED_KEYS,
} from "./mod.ts";
import { ANY_INDEX, ANY_KEY, dottedKey, leafKeys } from "./_keys.ts";
import { ConfigSchema } from "./_schema.ts";

const DOC = fs.readFileSync(new URL("../../docs/config.md", import.meta.url), "utf8");

/** The "Upstream sample" TOML block of docs/config.md. */
function upstreamSample(): string {
  const section = DOC.slice(DOC.indexOf("## Upstream sample"));
  const m = /```toml\n([\s\S]*?)```/.exec(section);
  assert.ok(m, "docs/config.md has an upstream sample");
  return m[1];
}

/** The ConfigError message `parseConfig(text)` throws. */
function errorOf(text: string, source = "c.toml"): string {
  try {
    parseConfig(text, source);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `a ConfigError, got ${err}`);
    assert.equal(err.message.includes("\n"), false, "one line");
    return err.message;
  }
  assert.fail(`accepted: ${text}`);
}

describe("defaults", () => {
  it("are upstream's effective defaults", () => {
    const c = defaultConfig();
    assert.equal(c.resolve_result_entry_ttl_sec, 120);
    assert.equal(c.prefetch_size, 0);
    assert.equal(c.prefetch_timeout_sec, 10);
    assert.equal(c.max_concurrency, 2);
    assert.equal(c.metadata_store, "memory");
    assert.equal(c.noprefetch, false);
    assert.deepEqual(c.blob, {
      valid_interval: 60,
      check_always: false,
      chunk_size: 50000,
      fetching_timeout_sec: 300,
      force_single_range_mode: false,
      prefetch_chunk_size: 0,
      max_retries: 5,
      min_wait_msec: 30,
      max_wait_msec: 300000,
    });
    assert.deepEqual(c.directory_cache, {
      max_lru_cache_entry: 10,
      max_cache_fds: 10,
      sync_add: false,
      direct: true,
      fadv_dontneed: false,
    });
    assert.equal(c.fuse.attr_timeout, 1);
    assert.equal(c.fuse.entry_timeout, 1);
    assert.equal(c.fuse.passthrough, false);
    assert.deepEqual(c.resolver, { request_timeout_sec: 30, config_path: "", host: {} });
    assert.deepEqual(c.admin, { address: "" });
    assert.deepEqual(c.cache, { max_size: 0, memory_size: 64 * 1024 * 1024 });
  });

  it("an explicit 0 means the default where upstream reads it so", () => {
    const { config } = parseConfig(
      "max_concurrency = 0\nprefetch_size = 0\n[blob]\nchunk_size = 0\nmax_retries = 0\n",
      "z.toml",
    );
    assert.equal(config.max_concurrency, 2);
    assert.equal(config.prefetch_size, 0);
    assert.equal(config.blob.chunk_size, 50000);
    assert.equal(config.blob.max_retries, 5);
  });

  it("an empty file is the default configuration", () => {
    assert.deepEqual(parseConfig("", "e.toml"), { config: defaultConfig(), warnings: [] });
  });
});

describe("DEFAULT_CONFIG_TOML", () => {
  it("parses to defaultConfig() without warnings", () => {
    assert.deepEqual(parseConfig(DEFAULT_CONFIG_TOML, "default.toml"), {
      config: defaultConfig(),
      warnings: [],
    });
  });

  it("sets every key of the schema", () => {
    const raw = parseToml(DEFAULT_CONFIG_TOML) as Record<string, unknown>;
    for (const leaf of leafKeys(ConfigSchema)) {
      if (leaf.path.includes(ANY_KEY) || leaf.path.includes(ANY_INDEX)) continue;
      let cur: unknown = raw;
      for (const seg of leaf.path) cur = (cur as Record<string, unknown> | undefined)?.[seg];
      assert.deepEqual(cur, leaf.default, dottedKey(leaf.path));
    }
  });
});

describe("the upstream sample config", () => {
  it("sets every upstream key and is accepted", () => {
    const text = upstreamSample();
    const raw = parseToml(text) as Record<string, unknown>;
    const ours = new Set(["admin", "cache", "credential_provider", "prefetch_profile"]);
    for (const leaf of leafKeys(ConfigSchema)) {
      if (
        ours.has(String(leaf.path[0])) ||
        ["resolver.request_timeout_sec", "resolver.config_path"].includes(dottedKey(leaf.path))
      ) {
        continue;
      }
      if (leaf.path.includes(ANY_KEY)) continue;
      let cur: unknown = raw;
      for (const seg of leaf.path) cur = (cur as Record<string, unknown> | undefined)?.[seg];
      assert.notEqual(cur, undefined, `sample sets ${dottedKey(leaf.path)}`);
    }
    const { config, warnings } = parseConfig(text, "sample.toml");
    assert.equal(config.max_concurrency, 100);
    assert.equal(config.blob.chunk_size, 100000);
    assert.equal(config.fuse.attr_timeout, 60);
    assert.equal(config.snapshotter.allow_invalid_mounts_on_restart, true);
    assert.equal(config.cri_keychain.listen_path, "/run/containerd-stargz-grpc/cri.sock");
    // One warning per unimplemented key, each naming it (the sample sets all of them).
    assert.equal(warnings.length, Object.keys(UNIMPLEMENTED_KEYS).length);
    for (const key of Object.keys(UNIMPLEMENTED_KEYS)) {
      assert.equal(warnings.filter((w) => w.includes(`"${key}"`)).length, 1, key);
    }
    const lines = text.split("\n");
    const passthrough = lines.findIndex((l) => l.startsWith("passthrough")) + 1;
    assert.ok(warnings.includes(
      `sample.toml:${passthrough}: ignoring "fuse.passthrough": FUSE passthrough is not implemented`,
    ));
  });

  it("reads resolver mirrors with headers", () => {
    const { config } = parseConfig(upstreamSample(), "sample.toml");
    assert.deepEqual(config.resolver.host["docker.io"].mirrors, [
      { host: "mirror.gcr.io", insecure: false, request_timeout_sec: 10, header: {} },
    ]);
    assert.deepEqual(config.resolver.host["exampleregistry.io"].mirrors, [
      { host: "mirrorhost.io", insecure: true, request_timeout_sec: 0, header: {} },
    ]);
    assert.deepEqual(config.resolver.host["registry2:5000"].mirrors, [{
      host: "registry2:5000",
      insecure: true,
      request_timeout_sec: -1,
      header: { "x-custom-1": "value1", "x-custom-2": ["value3", "value4"] },
    }]);
  });
});

describe("refused configurations", () => {
  it("a misspelled key: key, line and suggestion", () => {
    assert.equal(
      errorOf("# comment\nnoprefetch = true\n\nprefetch_sise = 1\n", "/etc/x/config.toml"),
      '/etc/x/config.toml:4: unknown key "prefetch_sise" (did you mean "prefetch_size"?)',
    );
  });

  it("a misspelled key in a table is named by its dotted path", () => {
    assert.equal(
      errorOf("[blob]\nchunk_size = 1\nmax_retires = 3\n"),
      'c.toml:3: unknown key "blob.max_retires" (did you mean "blob.max_retries"?)',
    );
  });

  it("a key in the wrong table suggests the right one", () => {
    assert.equal(
      errorOf("[fuse]\nchunk_size = 1\n"),
      'c.toml:2: unknown key "fuse.chunk_size" (did you mean "blob.chunk_size"?)',
    );
  });

  it("an unknown table", () => {
    assert.equal(
      errorOf("debug = true\n[blbo]\nchunk_size = 1\n"),
      'c.toml:2: unknown table "blbo" (did you mean "blob"?)',
    );
  });

  it("a wrong type names key, line and what was found", () => {
    assert.equal(
      errorOf('[blob]\nchunk_size = "50k"\n'),
      'c.toml:2: "blob.chunk_size" must be a non-negative integer, got the string "50k"',
    );
    assert.equal(
      errorOf("noprefetch = 1\n"),
      'c.toml:1: "noprefetch" must be a boolean (true or false), got the integer 1',
    );
    assert.equal(errorOf("blob = 5\n"), 'c.toml:1: "blob" must be a table, got the integer 5');
    assert.equal(
      errorOf("prefetch_size = 1.5\n"),
      'c.toml:1: "prefetch_size" must be a non-negative integer, got the float 1.5',
    );
    assert.equal(
      errorOf("[blob]\nchunk_size = -1\n"),
      'c.toml:2: "blob.chunk_size" must be a non-negative integer, got the integer -1',
    );
    assert.equal(
      parseConfig("[resolver]\nrequest_timeout_sec = -1\n", "t.toml").config.resolver
        .request_timeout_sec,
      -1,
    );
    assert.match(
      errorOf('metadata_store = "bolt"\n'),
      /^c\.toml:1: "metadata_store" must be one of "memory" or "db", got the string "bolt"$/,
    );
  });

  it("problems in mirrors point at the array element", () => {
    const text = [
      '[[resolver.host."ghcr.io".mirrors]]',
      'host = "a.example.com"',
      "",
      '[[resolver.host."ghcr.io".mirrors]]',
      'hots = "b.example.com"',
    ].join("\n");
    assert.equal(
      errorOf(text),
      `c.toml:5: unknown key 'resolver.host."ghcr.io".mirrors[1].hots' ` +
        `(did you mean 'resolver.host."ghcr.io".mirrors[1].host'?) (and 1 more problem)`,
    );
    assert.equal(
      errorOf('[[resolver.host."ghcr.io".mirrors]]\ninsecure = true\n'),
      `c.toml:1: missing required key 'resolver.host."ghcr.io".mirrors[0].host'`,
    );
    assert.equal(
      errorOf(
        '[[resolver.host."r".mirrors]]\nhost = "m"\n[resolver.host."r".mirrors.header]\nx = 1\n',
      ),
      'c.toml:4: "resolver.host.r.mirrors[0].header.x" must be a string or an array of ' +
        "strings, got the integer 1",
    );
  });

  it("TOML syntax errors name file and line", () => {
    assert.match(errorOf("debug = true\n[blob\n", "s.toml"), /^s\.toml:2: invalid TOML: \S/);
    assert.match(errorOf("a = 1\nb = [\n1,\n", "s.toml"), /^s\.toml:\d+: invalid TOML: \S/);
    assert.match(errorOf("debug = true\ndebug = false\n", "s.toml"), /^s\.toml:2: invalid TOML/);
  });

  it("reports the first problem by line and counts the others", () => {
    assert.equal(
      errorOf("zz = 1\ndebug = 3\n[blob]\nchunk_size = true\n"),
      'c.toml:1: unknown key "zz" (did you mean "ipfs"?) (and 2 more problems)',
    );
  });
});

describe("warnings for unimplemented keys", () => {
  it("one per key set to a non-default value, none at the default", () => {
    const text = "ipfs = true\n[fuse]\npassthrough = false\n[fuse_manager]\nenable = true\n";
    assert.deepEqual(parseConfig(text, "w.toml").warnings, [
      'w.toml:1: ignoring "ipfs": IPFS sources are not supported',
      'w.toml:5: ignoring "fuse_manager.enable": there is no separate FUSE manager process',
    ]);
  });

  it("the default cache types are fine, others warn", () => {
    assert.deepEqual(parseConfig('http_cache_type = ""\n', "w.toml").warnings, []);
    assert.equal(parseConfig('http_cache_type = "memory"\n', "w.toml").warnings.length, 1);
  });
});

describe("our keys", () => {
  it("sizes take bytes or a unit", () => {
    assert.equal(parseSize("10GiB"), 10 * 2 ** 30);
    assert.equal(parseSize("1.5 KB"), 1500);
    assert.equal(parseSize("4096"), 4096);
    assert.equal(parseSize("64mib"), 64 * 2 ** 20);
    assert.equal(parseSize("ten"), undefined);
    assert.equal(parseSize("5 parsecs"), undefined);
    const { config } = parseConfig('[cache]\nmax_size = "2GB"\nmemory_size = 1024\n', "s.toml");
    assert.deepEqual(config.cache, { max_size: 2e9, memory_size: 1024 });
    assert.match(
      errorOf("[cache]\nmax_size = -1\n"),
      /^c\.toml:2: "cache\.max_size" must be a size/,
    );
  });

  it("admin address: beside the socket, off, unix socket, or host:port", () => {
    for (
      const ok of ["", "off", "/run/stargz/admin.sock", "127.0.0.1:15300", "[::1]:80", ":8080"]
    ) {
      const toml = `[admin]\naddress = ${JSON.stringify(ok)}\n`;
      assert.equal(parseConfig(toml, "a.toml").config.admin.address, ok);
    }
    assert.match(
      errorOf('[admin]\naddress = "relative.sock"\n'),
      /^c\.toml:2: "admin\.address" must be an admin address/,
    );
    assert.equal(
      parseConfig('metrics_address = "127.0.0.1:8234"\n', "a.toml").config.metrics_address,
      "127.0.0.1:8234",
    );
    assert.match(
      errorOf('metrics_address = "/run/m.sock"\n'),
      /^c\.toml:1: "metrics_address" must be a metrics address/,
    );
  });
});

describe("loadConfig", () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-config-"));
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("a missing default file gives the defaults", async () => {
    const loaded = await loadConfig(path.join(tmp, "absent.toml"), { explicit: false });
    assert.deepEqual(loaded, { config: defaultConfig(), warnings: [] });
  });

  it("a missing explicit file is an error naming it", async () => {
    const file = path.join(tmp, "absent.toml");
    await assert.rejects(loadConfig(file, { explicit: true }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `config file ${file} does not exist`);
      return true;
    });
  });

  it("an unreadable file is an error naming it, explicit or not", async () => {
    for (const explicit of [true, false]) {
      await assert.rejects(loadConfig(tmp, { explicit }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.message, `cannot read config file ${tmp}: EISDIR`);
        return true;
      });
    }
  });

  it("reads and validates a file, naming it in messages", async () => {
    const file = path.join(tmp, "config.toml");
    fs.writeFileSync(file, "[blob]\nchunk_size = 1000\n");
    assert.equal((await loadConfig(file, { explicit: true })).config.blob.chunk_size, 1000);
    fs.writeFileSync(file, "[blob]\nchunk_sise = 1000\n");
    await assert.rejects(loadConfig(file, { explicit: false }), {
      name: "ConfigError",
      message: `${file}:2: unknown key "blob.chunk_sise" (did you mean "blob.chunk_size"?)`,
    });
  });
});
