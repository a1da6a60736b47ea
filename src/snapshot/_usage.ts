import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { Usage } from "./types.ts";

/**
 * Disk usage of the tree at `root` the way containerd's continuity measures it: every inode once
 * (hard links count once), size as allocated blocks × 512. Does not cross into other directories'
 * mounts any differently than containerd (it follows the tree, not symlinks).
 */
export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (p: string): Promise<void> => {
    const st = await fs.lstat(p, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const name of await fs.readdir(p)) await visit(path.join(p, name));
    }
  };
  await visit(root);
  return { size, inodes: seen.size };
}
