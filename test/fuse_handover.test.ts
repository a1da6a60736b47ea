/**
 * The FUSE takeover alone, without containerd: a child process mounts a filesystem and keeps
 * its connection in the fd holder; it is killed with a read of `/slow` taken but unanswered;
 * this process takes the connection back, serves it with `adopt`, and the kernel resends the
 * read (FUSE_NOTIFY_RESEND), so the reader gets its bytes instead of hanging.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openHolder } from "../src/fdstore/mod.ts";
import { adopt, type FuseSession, type SessionState } from "../src/fuse/mod.ts";
import { log } from "../src/log/mod.ts";
import { scriptCommand } from "../src/runtime/mod.ts";
import { handoverFs } from "./_fuse_handover_fs.ts";
import { processesWith, sh } from "./_fuse.ts";

const here = path.dirname(new URL(import.meta.url).pathname);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-handover-"));
const mountpoint = path.join(dir, "mnt");
const socket = path.join(dir, "holder.sock");
const stateFile = path.join(dir, "state.json");
let session: FuseSession | undefined;

const holders = (): number[] => processesWith(socket);

after(async () => {
  await session?.unmount();
  await sh(["umount", "-l", mountpoint]);
  for (const pid of holders()) process.kill(pid, "SIGTERM");
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("FUSE takeover", () => {
  it("a read the killed server had taken is resent to the new one and completes", async () => {
    fs.mkdirSync(mountpoint);
    const [cmd, ...args] = scriptCommand(path.join(here, "_fuse_handover_server.ts"), [
      mountpoint,
      socket,
      stateFile,
    ]);
    const server = spawn(cmd!, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    const saw = (word: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (out.includes(word)) resolve();
        };
        server.stdout!.on("data", (d) => {
          out += d;
          check();
        });
        server.once("exit", () => reject(new Error(`server exited before "${word}": ${out}`)));
        check();
      });
    await saw("ready");
    assert.equal((await sh(["cat", path.join(mountpoint, "hello")])).stdout, "hello\n");

    const slow = sh(["cat", path.join(mountpoint, "slow")]);
    await saw("slow-read");
    const dead = new Promise((r) => server.once("exit", r));
    server.kill("SIGKILL");
    await dead;

    const store = await openHolder({
      socket,
      command: scriptCommand(path.join(here, "../src/main.ts"), ["fd-holder", "--socket", socket]),
      log,
    });
    const fd = store.handedBack.get("m");
    assert.ok(fd !== undefined, "the holder handed the connection back");
    const state = JSON.parse(fs.readFileSync(stateFile, "utf8")) as SessionState;
    session = await adopt(
      handoverFs((dest) => {
        dest.set(new TextEncoder().encode("slow\n"));
        return 5;
      }),
      mountpoint,
      fd,
      state,
    );
    assert.deepEqual(await slow, { code: 0, stdout: "slow\n", stderr: "" });
    assert.equal((await sh(["cat", path.join(mountpoint, "hello")])).stdout, "hello\n");
    // Through a child: a synchronous call from this process would wait on itself.
    assert.equal((await sh(["ls", mountpoint])).stdout, "hello\nslow\n");
    await session.unmount();
    session = undefined;
    await store.drop("m");
    store.close();
  });
});
