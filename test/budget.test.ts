/**
 * The byte budget: how many registry requests and bytes one container start costs, from CRI
 * pull to the end of a fixed workload — numbers that CPU load cannot move. The image stands in
 * for python3 (a Debian rootfs via debootstrap is too slow for CI): busybox as the interpreter
 * plus a generated standard library of 400 modules (text-like, compressible, 1-24 KiB each),
 * of which the workload "imports" (reads) a fixed 80 and lists the rest. No background fetch,
 * so only what the start needs is fetched.
 *
 * The test fails when requests or bytes grow more than 5% over `test/budget.baseline.json`.
 * After a change that is meant to move them, rewrite the baseline and commit it with the
 * reason:  STARGZ_UPDATE_BUDGET=1 node_modules/.bin/bun test ./test/budget.test.ts
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupDir, REPO_ROOT, startContainerd, startStargz } from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import { estargzLayer, makeBusyboxRoot, pushLayers, tarDir } from "./_images.ts";
import { startFaultProxy, startRegistry, testBytes } from "./_registry.ts";
import type { FaultProxy, TestRegistry } from "./_registry.ts";

const BASELINE = path.join(REPO_ROOT, "test", "budget.baseline.json");
const TOLERANCE = 0.05;
const MODULES = 400;
const IMPORTED = 80;
const WORDS = ["def", "return", "self", "import", "class", "None", "if", "else", "for", "in"];

let dir: string;
let reg: TestRegistry;
let proxy: FaultProxy;
let daemon: StargzProcess;
let ctd: Containerd;

/** Deterministic Python-looking text of `size` bytes. */
function moduleText(size: number, seed: number): string {
  const rnd = testBytes(size, seed);
  let out = "";
  for (let i = 0; out.length < size; i++) {
    out += WORDS[rnd[i % size] % WORDS.length] + (rnd[(i * 7) % size] % 9 === 0 ? "\n" : " ");
  }
  return out.slice(0, size);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-budget-"));
  const root = path.join(dir, "rootfs");
  makeBusyboxRoot(root);
  const lib = path.join(root, "usr", "lib", "python3");
  fs.mkdirSync(lib, { recursive: true });
  const sizes = testBytes(MODULES, 42);
  for (let i = 0; i < MODULES; i++) {
    fs.writeFileSync(path.join(lib, `m${i}.py`), moduleText(1024 + sizes[i] * 92, i + 1));
    fs.utimesSync(path.join(lib, `m${i}.py`), 1_700_000_000, 1_700_000_000);
  }
  tarDir(root, path.join(dir, "rootfs.tar"));
  const layer = await estargzLayer(path.join(dir, "rootfs.tar"));
  reg = await startRegistry();
  proxy = await startFaultProxy(reg.url);
  await pushLayers(reg, "budget/python", "v1", [layer]);
  fs.writeFileSync(path.join(dir, "config.toml"), "no_background_fetch = true\n");
  daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
  ctd = await startContainerd({ dir, snapshotterAddress: daemon.address });
});

after(async () => {
  await ctd?.stop();
  await daemon?.stop();
  await proxy?.stop();
  await reg?.stop();
  await cleanupDir(dir);
});

describe("byte budget", () => {
  it("a python3-like start costs no more requests and bytes than the baseline (+5%)", async () => {
    const ref = `${proxy.host}/budget/python:v1`;
    await criPull(ctd.address, ref);
    // Every 5th module, as a fixed import list; `ls -l` stats them all (metadata only).
    const imports = Array.from({ length: IMPORTED }, (_, i) => `/usr/lib/python3/m${i * 5}.py`);
    const out = await ctd.ctrOk([
      "run",
      "--rm",
      "--snapshotter",
      "stargz",
      ref,
      "budget-run",
      "/bin/sh",
      "-c",
      `ls -l /usr/lib/python3 | wc -l; cat ${imports.join(" ")} | wc -c`,
    ], { namespace: "k8s.io", timeoutMs: 120_000 });
    assert.match(out, new RegExp(`^\\s*${MODULES + 1}\\n\\s*\\d+\\n$`));
    const measured = {
      requests: proxy.requests.length,
      bytes: proxy.requests.reduce((n, r) => n + (r.bytes ?? 0), 0),
    };
    console.log(`budget: ${JSON.stringify(measured)}`);
    if (process.env.STARGZ_UPDATE_BUDGET) {
      fs.writeFileSync(BASELINE, JSON.stringify(measured, null, 2) + "\n");
      return;
    }
    const baseline = JSON.parse(fs.readFileSync(BASELINE, "utf8")) as typeof measured;
    for (const k of ["requests", "bytes"] as const) {
      assert.ok(
        measured[k] <= baseline[k] * (1 + TOLERANCE),
        `${k}: ${measured[k]} is more than 5% over the baseline ${baseline[k]} ` +
          `(test/budget.baseline.json; STARGZ_UPDATE_BUDGET=1 rewrites it)`,
      );
    }
  });
});
