/** Realistic layer contents for benchmarks, sampled from this machine's own files. */
import * as fs from "node:fs";
import * as path from "node:path";

/** Entries picked by {@link sampleTree}: absolute paths, directories first. */
export interface SampledTree {
  entries: string[];
  /** The large file that was included first, when `bigMax` was given. */
  big?: string;
}

function readable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Regular files under `roots` adding up to about `limit` bytes, sampled evenly by size across the
 * whole tree (a realistic mix of small and large files), plus the directories that hold them and
 * the symlinks beside them. With `bigMax`, the largest file of at most that size comes first.
 */
export function sampleTree(roots: readonly string[], limit: number, bigMax?: number): SampledTree {
  const files: { p: string; size: number }[] = [];
  const links: string[] = [];
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = fs.readdirSync(dir).sort();
    } catch {
      return;
    }
    for (const n of names) {
      const p = path.join(dir, n);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink()) links.push(p);
      else if (st.isFile() && readable(p)) files.push({ p, size: st.size });
    }
  };
  for (const r of roots) walk(r);
  let big: { p: string; size: number } | undefined;
  if (bigMax !== undefined) {
    for (const f of files) if (f.size <= bigMax && f.size > (big?.size ?? -1)) big = f;
  }
  const rest = limit - (big?.size ?? 0);
  const total = files.reduce((n, f) => n + f.size, 0) - (big?.size ?? 0);
  const share = Math.min(1, rest / Math.max(1, total));
  const picked = new Set<string>(big ? [big.p] : []);
  let budget = 0;
  for (const f of files) {
    if (f === big) continue;
    budget += f.size * share;
    if (budget < f.size) continue;
    budget -= f.size;
    picked.add(f.p);
  }
  const dirs = new Set<string>();
  for (const p of picked) {
    for (let d = path.dirname(p); d !== "/" && !dirs.has(d); d = path.dirname(d)) dirs.add(d);
  }
  const linksNear = links.filter((l) => dirs.has(path.dirname(l)));
  return { entries: [...[...dirs].sort(), ...picked, ...linksNear], big: big?.p };
}

/** Files per directory of {@link makeManyEntries}. */
const FILES_PER_DIR = 99;

/** A tree of `n` entries (including its root): directories of FILES_PER_DIR tiny files. */
export function makeManyEntries(dir: string, n: number): void {
  fs.mkdirSync(dir);
  let count = 1;
  for (let d = 0; count < n; d++) {
    const sub = path.join(dir, `d${String(d).padStart(5, "0")}`);
    fs.mkdirSync(sub);
    count++;
    for (let f = 0; f < FILES_PER_DIR && count < n; f++, count++) {
      fs.writeFileSync(path.join(sub, `file-${f}.txt`), `entry ${d}/${f}\n`);
    }
  }
}
