/**
 * The "old daemon" of test/fuse_handover.test.ts: mounts {@link handoverFs} at argv[2], keeps
 * its /dev/fuse in the fd holder at argv[3], writes the session state to argv[4], prints
 * `ready`, prints `slow-read` when a read of `/slow` arrives (never answered), and waits to be
 * killed.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { openHolder } from "../src/fdstore/mod.ts";
import { mount } from "../src/fuse/mod.ts";
import { log } from "../src/log/mod.ts";
import { scriptCommand } from "../src/runtime/mod.ts";
import { handoverFs } from "./_fuse_handover_fs.ts";

const [mountpoint, socket, stateFile] = process.argv.slice(2) as [string, string, string];
const main = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../src/main.ts");
const session = await mount(
  handoverFs(() => {
    console.log("slow-read");
    return new Promise<number>(() => {});
  }),
  mountpoint,
);
const store = await openHolder({
  socket,
  command: scriptCommand(main, ["fd-holder", "--socket", socket]),
  log,
});
await store.keep("m", session.deviceFd);
fs.writeFileSync(stateFile, JSON.stringify(session.state()));
console.log("ready");
setInterval(() => {}, 1 << 30);
