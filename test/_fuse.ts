/**
 * Helpers for the FUSE end-to-end tests: running real tools without blocking the event loop
 * (the mount is served by this very process), temp dirs, and a safety net that leaves nothing
 * mounted even when a test fails half-way.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import type { FuseSession } from "../src/fuse/mod.ts";

/** What a finished command printed and how it ended. */
export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Processes with an argument containing `needle` (an fd holder by its socket path). Sync, so
 * that a wait's condition can be a plain predicate; /proc is in memory.
 */
export function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let cmdline = "";
    try {
      cmdline = fs.readFileSync(`/proc/${name}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (cmdline.split("\0").some((a) => a.includes(needle))) pids.push(Number(name));
  }
  return pids;
}

/** Runs `argv` asynchronously and collects its output (never throws for a non-zero exit). */
export function sh(argv: readonly string[], timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      argv[0],
      argv.slice(1),
      { maxBuffer: 256 << 20, timeout: timeoutMs, encoding: "utf8" },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Like {@link sh} but throws with the tool's stderr when it fails. */
export async function ok(argv: readonly string[]): Promise<string> {
  const r = await sh(argv);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** A fresh directory under /tmp. */
export function tempDir(prefix = "stargz-fuse-"): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Sessions to unmount at the end, and directories to remove. */
export class Cleanup {
  sessions: FuseSession[] = [];
  dirs: string[] = [];

  /** Registers `s` for unmounting; returns it. */
  add(s: FuseSession): FuseSession {
    this.sessions.push(s);
    return s;
  }

  /** Unmounts everything (forcefully if needed) and removes the directories. */
  async run(): Promise<void> {
    for (const s of this.sessions) await s.unmount();
    for (const d of this.dirs) {
      // Safety net: a mount left under our dir by a failing test would make rm fail or worse.
      const mounts = await fsp.readFile("/proc/self/mountinfo", "utf8");
      for (const line of mounts.split("\n").reverse()) {
        const mp = line.split(" ")[4];
        if (mp && (mp === d || mp.startsWith(d + "/"))) await sh(["umount", "-l", mp]);
      }
      await fsp.rm(d, { recursive: true, force: true });
    }
  }
}
