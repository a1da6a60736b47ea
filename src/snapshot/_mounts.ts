/** The mount table and the few mount operations the snapshotter needs (via util-linux). */
import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Undoes the octal escapes (`\040` for space …) the kernel uses in /proc/self/mountinfo. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points in this mount namespace, in mount order. */
export async function mountPoints(): Promise<string[]> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    if (fields.length > 4) out.push(unescapeMountPath(fields[4]!));
  }
  return out;
}

/** Mount points at or below `dir`, deepest (most recently mounted) first. */
export async function mountPointsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith("/") ? dir : dir + "/";
  return (await mountPoints()).filter((m) => m === dir || m.startsWith(prefix)).reverse();
}

/** Unmounts `target`; falls back to a lazy unmount when the mount is busy or dead. */
export async function unmount(target: string): Promise<void> {
  try {
    await run("umount", [target]);
  } catch {
    await run("umount", ["-l", target]);
  }
}
