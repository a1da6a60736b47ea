/**
 * Restart behaviour of `stargz serve` with remote snapshots in its store: restore runs in the
 * background, a layer that cannot be mounted again is fatal unless
 * `allow_invalid_mounts_on_restart`, with which the daemon keeps serving and the snapshot stays.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { Logger } from "../src/log/mod.ts";
import {
  AlreadyExistsError,
  Snapshotter,
  STARGZ_DIGEST_LABEL,
  STARGZ_REFERENCE_LABEL,
  TARGET_SNAPSHOT_LABEL,
} from "../src/snapshot/mod.ts";
import { runCli, startCli } from "./_cli.ts";
import { cleanupDir, startStargz, waitUntil } from "./_containerd.ts";
import { BindLayerFs } from "./snapshotter_bindfs.ts";

let tmp: string;
let root: string;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-restore-"));
  root = path.join(tmp, "root");
  const layer = path.join(tmp, "layer");
  await fs.mkdir(layer);
  await fs.writeFile(path.join(layer, "f"), "remote");
  // A previous daemon that had a remote filesystem left a remote layer and a view on it.
  const rfs = new BindLayerFs();
  rfs.layers.set(`sha256:${"1".repeat(64)}`, layer);
  const sn = await Snapshotter.open({
    root,
    log: new Logger({ test: "restore" }),
    fileSystem: rfs,
  });
  await assert.rejects(
    sn.prepare("extract l1", "", {
      [TARGET_SNAPSHOT_LABEL]: "chain-l1",
      [STARGZ_REFERENCE_LABEL]: "registry.test/app:1",
      [STARGZ_DIGEST_LABEL]: `sha256:${"1".repeat(64)}`,
    }),
    AlreadyExistsError,
  );
  await sn.view("v", "chain-l1");
  await sn.close();
});

after(async () => {
  await cleanupDir(tmp);
});

describe("stargz serve restart with remote snapshots", () => {
  it("fails when a remote layer cannot be restored", async () => {
    const sock = path.join(tmp, "a.sock");
    // This daemon has no remote filesystem, so the layer cannot come back.
    const res = await runCli(["serve", "--root", root, "--address", sock]);
    assert.equal(res.code, 1, res.stderr);
    const lines = res.stderr.trim().split("\n").filter((l) => l.startsWith("{")).map((l) =>
      JSON.parse(l)
    );
    assert.ok(lines.some((l) => l.msg === "serving"), "served before the restore finished");
    assert.ok(
      lines.some((l) => l.msg === "failed to restore remote snapshot" && l.key === "chain-l1"),
    );
    assert.match(res.stderr, /failed to restore remote snapshots: chain-l1/);
    await assert.rejects(fs.stat(sock), { code: "ENOENT" });
  });

  it("keeps serving with allow_invalid_mounts_on_restart", async () => {
    const config = path.join(tmp, "config.toml");
    await fs.writeFile(config, "[snapshotter]\nallow_invalid_mounts_on_restart = true\n");
    const sgz = await startStargz({ dir: tmp, root, args: ["--config", config] });
    try {
      await waitUntil(
        () => sgz.logs().includes("failed to restore remote snapshot"),
        30_000,
        "the restore failure",
      );
      // Still serving after the restore failed (what the broken snapshot answers is covered by
      // src/snapshot and src/service tests; a gRPC client here would be Deno talking to Deno,
      // whose HTTP/2 aborts on GOAWAY).
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sgz.child.exitCode, null, sgz.logs());
      await fs.stat(sgz.address);
      // `stargz status` finds the admin API beside the socket and names the failure.
      const status = await runCli(["status", "--address", sgz.address, "--config", config]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /^RESTORE FAILURES 1\n {2}chain-l1 \(.*\): .+$/m);
      // --watch redraws until stopped.
      const watch = startCli([
        "status",
        "--address",
        sgz.address,
        "--config",
        config,
        "--watch",
        "--interval",
        "1",
      ]);
      let screen = "";
      watch.stdout!.on("data", (d) => (screen += d));
      await waitUntil(() => screen.split("\x1b[2J").length > 2, 30_000, "two refreshes");
      watch.kill("SIGTERM");
      assert.match(screen, /RESTORE FAILURES 1/);
    } finally {
      assert.equal(await sgz.stop(), 0, sgz.logs());
    }
    // The snapshot stays in the store for containerd to remove.
    const sn = await Snapshotter.open({
      root,
      log: new Logger({ test: "restore" }),
      restore: false,
    });
    try {
      assert.deepEqual((await sn.list()).map((i) => i.name).sort(), ["chain-l1", "v"]);
    } finally {
      await sn.close();
    }
  });
});
