import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { log } from "../log/mod.ts";
import { scriptCommand } from "../runtime/mod.ts";
import { openHolder } from "./mod.ts";
import { processesWith } from "../../test/_fuse.ts";

const MAIN = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../main.ts");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-fdstore-"));
const socket = path.join(dir, "holder.sock");
const options = {
  socket,
  command: scriptCommand(MAIN, ["fd-holder", "--socket", socket]),
  log,
};

/** Pids of processes serving `socket`. */
const holders = (): number[] => processesWith(socket);

async function until(p: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await p())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

after(() => {
  for (const pid of holders()) process.kill(pid, "SIGTERM");
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("fd holder", () => {
  it("keeps descriptors for the next process, drops on request, and starts only when needed", async () => {
    const first = await openHolder(options);
    assert.equal(first.handedBack.size, 0);
    assert.deepEqual(holders(), [], "no holder before anything is kept");

    const file = path.join(dir, "kept");
    fs.writeFileSync(file, "kept");
    const fd = fs.openSync(file, "r");
    const pipe = fs.openSync(path.join(dir, "dropped"), "w");
    await first.keep("file", fd);
    await first.keep("other", pipe);
    assert.equal(holders().length, 1);
    await first.drop("other");
    first.close();
    fs.closeSync(fd);
    fs.closeSync(pipe);

    const second = await openHolder(options);
    assert.deepEqual([...second.handedBack.keys()], ["file"]);
    const copy = second.handedBack.get("file")!;
    // The same open file, usable through node:fs on this runtime.
    assert.equal(fs.fstatSync(copy).ino, fs.statSync(file).ino);
    assert.equal(fs.readFileSync(copy, "utf8"), "kept");
    fs.closeSync(copy);
    second.close();
    assert.equal(holders().length, 1);
  });

  it("a daemon that lost its holder starts another and hands it everything again", async () => {
    const store = await openHolder(options);
    const [old] = holders();
    const fd = fs.openSync(path.join(dir, "kept"), "r");
    await store.keep("again", fd);
    process.kill(old!, "SIGKILL");
    await until(() => !holders().includes(old!), "the holder to die");
    // Waits for the reconnection, which hands the new holder what this process keeps.
    await store.keep("later", fd);
    assert.equal(holders().length, 1);
    store.close();
    const next = await openHolder(options);
    assert.deepEqual([...next.handedBack.keys()].sort(), ["again", "later"]);
    for (const copy of next.handedBack.values()) fs.closeSync(copy);
    next.close();
    fs.closeSync(fd);
  });
  it("lets go of a FUSE descriptor whose connection ended", async () => {
    const store = await openHolder(options);
    // A /dev/fuse that was never mounted polls as an error, like one whose mount is gone.
    const dead = fs.openSync("/dev/fuse", "r+");
    const live = fs.openSync(path.join(dir, "kept"), "r");
    await store.keep("dead", dead);
    await store.keep("live", live);
    store.close();
    fs.closeSync(dead);
    fs.closeSync(live);
    let names: string[] = [];
    await until(async () => {
      // Looks without taking anything: a fresh store per look, its copies closed at once.
      const s = await openHolder(options);
      names = [...s.handedBack.keys()].sort();
      for (const fd of s.handedBack.values()) fs.closeSync(fd);
      s.close();
      return names.length > 0 && !names.includes("dead");
    }, "the ended connection to be dropped");
    assert.ok(names.includes("live"));
  });
});
