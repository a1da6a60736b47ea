/** The filesystem both sides of test/fuse_handover.test.ts serve (same build, same node ids). */
import { MemoryFileSystem } from "../src/fuse/mod.ts";
import type { FileSystem, MaybePromise } from "../src/fuse/mod.ts";

/** `/hello` and `/slow` (whose reads `slow` answers); node ids depend only on this order. */
export function handoverFs(slow: (dest: Uint8Array) => MaybePromise<number>): FileSystem {
  const m = new MemoryFileSystem();
  m.addFile("hello", "hello\n");
  const slowId = m.addFile("slow", "slow\n");
  return {
    lookup: (parent, name) => m.lookup(parent, name),
    getattr: (node) => m.getattr(node),
    readdir: (node, fh, cookie, sink) => m.readdir(node, fh, cookie, sink),
    read: (node, fh, offset, dest) => node === slowId ? slow(dest) : m.read(node, fh, offset, dest),
  };
}
