/**
 * Child process of snapshotter_crash.test.ts: opens a snapshotter on `root`, builds a small
 * baseline, then performs one operation and SIGKILLs itself at the named step inside it.
 *
 * Usage: snapshotter_crash_child.ts ROOT STEP
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Logger } from "../src/log/mod.ts";
import { type SnapshotStep, Snapshotter } from "../src/snapshot/mod.ts";

const [root, crashAt] = process.argv.slice(2) as [string, SnapshotStep];
let armed = false;
const sn = await Snapshotter.open({
  root,
  log: new Logger({ child: "crash" }),
  asyncRemove: false,
  onStep: (step) => {
    if (!armed || step !== crashAt) return;
    fs.writeFileSync(path.join(root, "..", "reached"), step);
    process.kill(process.pid, "SIGKILL");
  },
});

await sn.prepare("base-a", "");
await sn.commit("base", "base-a");
await sn.prepare("c-active", "base");
await sn.view("r", "base");
armed = true;
if (crashAt.startsWith("prepare:")) await sn.prepare("p", "base");
else if (crashAt.startsWith("commit:")) await sn.commit("c", "c-active");
else await sn.remove("r");
// Reaching this line means the crash point was never hit.
process.exit(3);
