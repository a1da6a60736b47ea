/**
 * Crash consistency: a process killed (SIGKILL) between any two steps of Prepare, Commit or
 * Remove leaves a store that the next start turns consistent — every snapshot has its
 * directories, no directory lacks a snapshot, the interrupted operation either happened
 * completely or not at all, and everything keeps working.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { Logger } from "../src/log/mod.ts";
import { scriptCommand } from "../src/runtime/mod.ts";
import { type Mount, NotFoundError, type SnapshotStep, Snapshotter } from "../src/snapshot/mod.ts";
import * as grpc from "@grpc/grpc-js";
import { snapshotsServiceDefinition } from "../src/service/mod.ts";
import { cleanupDir, REPO_ROOT, startStargz } from "./_containerd.ts";

const CHILD = path.join(REPO_ROOT, "test/snapshotter_crash_child.ts");
const log = new Logger({ test: "crash" });

function runChild(root: string, step: SnapshotStep): Promise<{ code: number | null; err: string }> {
  const [cmd, ...args] = scriptCommand(CHILD, [root, step]);
  const child = spawn(cmd!, args, { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, err })));
}

/** The directories a snapshot's mounts use (bind source, upper, work and lower dirs). */
function mountDirs(m: Mount[]): string[] {
  if (m[0]!.type === "bind") return [m[0]!.source];
  return m[0]!.options.flatMap((o) => {
    const [k, v] = o.split("=");
    return k === "upperdir" || k === "workdir" || k === "lowerdir" ? v!.split(":") : [];
  });
}

/** Checks that store and directories agree; returns snapshot name → kind. */
async function assertConsistent(sn: Snapshotter, root: string): Promise<Map<string, string>> {
  const infos = await sn.list();
  const kinds = new Map(infos.map((i) => [i.name, i.kind]));
  const dirs = (await fs.readdir(path.join(root, "snapshots"))).sort();
  assert.equal(dirs.length, infos.length, `dirs ${dirs} vs snapshots ${[...kinds.keys()]}`);
  for (const info of infos) {
    // Committed snapshots have no mounts of their own; look at them through a view.
    const m = info.kind === "committed"
      ? await sn.view(`check-${info.name}`, info.name)
      : await sn.mounts(info.name);
    for (const d of mountDirs(m)) await fs.stat(d);
    if (info.kind === "committed") await sn.remove(`check-${info.name}`);
  }
  return kinds;
}

/** Removes every snapshot, leaves first. */
async function removeAll(sn: Snapshotter): Promise<void> {
  for (let infos = await sn.list(); infos.length > 0; infos = await sn.list()) {
    const parents = new Set(infos.map((i) => i.parent));
    for (const i of infos) if (!parents.has(i.name)) await sn.remove(i.name);
  }
}

const STEPS: { step: SnapshotStep; applied: boolean }[] = [
  { step: "prepare:dir-created", applied: false },
  { step: "prepare:row-inserted", applied: false },
  { step: "prepare:dir-renamed", applied: false },
  { step: "commit:usage-measured", applied: false },
  { step: "remove:row-deleted", applied: false },
  { step: "remove:committed", applied: true },
];

describe("snapshotter crash consistency", () => {
  let tmp: string;
  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-crash-"));
  });
  after(async () => {
    await cleanupDir(tmp);
  });

  for (const { step, applied } of STEPS) {
    it(`recovers from a kill at ${step}`, async () => {
      const dir = path.join(tmp, step.replace(":", "-"));
      const root = path.join(dir, "root");
      await fs.mkdir(dir);
      const res = await runChild(root, step);
      assert.notEqual(res.code, 3, `crash point ${step} never reached`);
      assert.equal(await fs.readFile(path.join(dir, "reached"), "utf8"), step, res.err);

      const sn = await Snapshotter.open({ root, log, asyncRemove: false });
      try {
        const kinds = await assertConsistent(sn, root);
        assert.equal(kinds.get("base"), "committed");
        if (step.startsWith("prepare:")) {
          assert.equal(kinds.has("p"), applied);
          await sn.prepare("p", "base");
        } else if (step.startsWith("commit:")) {
          assert.equal(kinds.get("c-active"), "active");
          assert.equal(kinds.has("c"), false);
          await sn.commit("c", "c-active");
          assert.equal((await sn.stat("c")).kind, "committed");
        } else {
          assert.equal(kinds.has("r"), !applied);
          if (!applied) await sn.remove("r");
          await assert.rejects(sn.stat("r"), NotFoundError);
        }
        await assertConsistent(sn, root);
        // Everything can be taken down to an empty root.
        await removeAll(sn);
        assert.deepEqual(await fs.readdir(path.join(root, "snapshots")), []);
      } finally {
        await sn.close();
      }
    });
  }

  it("recovers from kill -9 of the daemon under concurrent load", async () => {
    const dir = path.join(tmp, "daemon");
    await fs.mkdir(dir);
    const sgz = await startStargz({ dir });
    const Ctor = grpc.makeGenericClientConstructor(snapshotsServiceDefinition(), "Snapshots");
    const client = new Ctor(`unix://${sgz.address}`, grpc.credentials.createInsecure());
    const call = (method: string, req: object): Promise<void> =>
      new Promise((resolve, reject) => {
        const fn = (client as unknown as Record<string, (...a: unknown[]) => void>)[method]!;
        fn.call(client, req, (err: Error | null) => (err ? reject(err) : resolve()));
      });
    let done = 0;
    let stop = false;
    const worker = async (w: number): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const k = `w${w}-${i}`;
        try {
          await call("Prepare", { key: `${k}-a`, parent: "", labels: {} });
          await call("Commit", { name: k, key: `${k}-a`, labels: {} });
          await call("View", { key: `${k}-v`, parent: k, labels: {} });
          if (i % 2) {
            await call("Remove", { key: `${k}-v` });
            await call("Remove", { key: k });
          }
          done++;
        } catch {
          return; // the daemon died under us
        }
      }
    };
    const workers = [0, 1, 2, 3].map(worker);
    try {
      while (done < 20) await new Promise((r) => setTimeout(r, 10));
      await sgz.kill();
    } finally {
      stop = true;
      await Promise.all(workers);
      client.close();
      await sgz.kill();
    }
    const root = sgz.root;
    const sn = await Snapshotter.open({ root, log, asyncRemove: false });
    try {
      const kinds = await assertConsistent(sn, root);
      assert.ok(kinds.size > 0);
      await removeAll(sn);
      assert.deepEqual(await fs.readdir(path.join(root, "snapshots")), []);
    } finally {
      await sn.close();
    }
  });
});
