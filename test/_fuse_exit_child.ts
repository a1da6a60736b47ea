/**
 * Child of fuse_lifecycle.test.ts: mounts a memory filesystem at argv[2], reads it with cat, then
 * exits without unmounting (as a crash would). The read goes through a child process on purpose:
 * Deno's FileHandle.read blocks the main thread, which here is also the FUSE server.
 */
import { execFile } from "node:child_process";
import { MemoryFileSystem, mount } from "../src/fuse/mod.ts";

const mp = process.argv[2];
const memfs = new MemoryFileSystem();
memfs.addFile("hello", "hi\n");
await mount(memfs, mp);
const text = await new Promise<string>((resolve, reject) =>
  execFile("cat", [`${mp}/hello`], (err, out) => (err ? reject(err) : resolve(out)))
);
console.log(text);
process.exit(3);
