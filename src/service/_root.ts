import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The daemon root cannot be used; the message names the path and the reason. */
export class RootDirError extends Error {
  override name = "RootDirError";
}

/**
 * overlayfs needs d_type from its upper and lower filesystems. Node's readdir hides DT_UNKNOWN,
 * so ask the filesystem instead: the one common filesystem that can lack d_type is XFS made
 * with `ftype=0`.
 */
async function supportsDType(dir: string): Promise<boolean> {
  let fsType: string;
  try {
    fsType = (await run("stat", ["-f", "-c", "%T", dir])).stdout.trim();
  } catch {
    return true;
  }
  if (fsType !== "xfs") return true;
  try {
    const info = (await run("xfs_info", [dir])).stdout;
    return !/ftype=0\b/.test(info);
  } catch {
    return true;
  }
}

/**
 * Creates the daemon root (0700) when missing and checks it can hold overlay snapshots.
 * Returns whether it created the directory, so a failed start can remove it.
 */
export async function prepareRoot(root: string): Promise<boolean> {
  let created = false;
  try {
    await fs.stat(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new RootDirError(`root ${root}: ${(err as Error).message}`);
    }
    try {
      await fs.mkdir(root, { recursive: true, mode: 0o700 });
      created = true;
    } catch (mkErr) {
      throw new RootDirError(`cannot create root ${root}: ${(mkErr as Error).message}`);
    }
  }
  const st = await fs.stat(root);
  if (!st.isDirectory()) throw new RootDirError(`root ${root}: not a directory`);
  if (!(await supportsDType(root))) {
    if (created) await fs.rmdir(root).catch(() => {});
    throw new RootDirError(`root ${root}: filesystem does not support d_type (overlayfs needs it)`);
  }
  return created;
}
