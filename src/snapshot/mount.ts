/**
 * Performs snapshot mounts the way containerd does, for tools and tests that mount a snapshot
 * without containerd.
 */
import { execFile } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import type { Mount } from "./types.ts";

const run = promisify(execFile);

/** mount(2) takes its data in one page; containerd leaves 512 bytes of slack too. */
const PAGE_SIZE = 4096;

/**
 * When the overlay options would not fit into a page, rewrite `lowerdir` relative to the
 * common parent of the lower directories (their snapshot dir), to be mounted from there —
 * containerd's trick that makes deep layer chains mountable.
 */
export function compactLowerdir(options: readonly string[]): { cwd?: string; options: string[] } {
  const size = options.reduce((n, o) => n + o.length, 0);
  const idx = options.findIndex((o) => o.startsWith("lowerdir="));
  if (size < PAGE_SIZE - 512 || idx < 0) return { options: [...options] };
  const dirs = options[idx]!.slice("lowerdir=".length).split(":");
  if (dirs.length < 2) return { options: [...options] };
  let common = dirs[0]!;
  for (const d of dirs) {
    let i = 0;
    while (i < common.length && i < d.length && common[i] === d[i]) i++;
    common = common.slice(0, i);
  }
  // The common prefix may end inside an id ("…/snapshots/1" of 12 and 13): use its parent.
  const dir = path.dirname(common);
  if (dir === "/") return { options: [...options] };
  const prefix = dir + "/";
  const rest = options.filter((_, i) => i !== idx);
  rest.push(`lowerdir=${dirs.map((d) => d.slice(prefix.length)).join(":")}`);
  return { cwd: dir, options: rest };
}

/** Mounts `mounts` on `target` in order (bind and overlay mounts, as the snapshotter returns). */
export async function mountAll(mounts: readonly Mount[], target: string): Promise<void> {
  for (const m of mounts) {
    if (m.type === "bind") {
      const recursive = m.options.includes("rbind");
      await run("mount", [recursive ? "--rbind" : "--bind", m.source, target]);
      if (m.options.includes("ro")) await run("mount", ["-o", "remount,bind,ro", target]);
      continue;
    }
    const { cwd, options } = compactLowerdir(m.options);
    await run("mount", ["-t", m.type, m.source, "-o", options.join(","), target], { cwd });
  }
}
