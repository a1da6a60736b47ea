/**
 * Mounting and unmounting with the system's mount(8)/umount(8), no libfuse and no fusermount:
 * we run as root and hand the open /dev/fuse to `mount -o fd=3` as the child's fd 3.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";

/** What a finished command printed and how it ended. */
export interface CommandResult {
  code: number;
  stderr: string;
}

/** Runs `argv` with `extraFd` (if given) as the child's fd 3; never throws for a non-zero exit. */
export function run(argv: readonly string[], extraFd?: number): Promise<CommandResult> {
  return new Promise((resolve) => {
    const stdio: ("ignore" | "pipe" | number)[] = ["ignore", "ignore", "pipe"];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(argv[0], argv.slice(1), { stdio });
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (s: string) => (stderr += s));
    child.on("error", (err) => resolve({ code: 127, stderr: err.message }));
    child.on("close", (code) => resolve({ code: code ?? 1, stderr: stderr.trim() }));
  });
}

/** One line of /proc/self/mountinfo that we care about. */
export interface MountInfo {
  /** `major:minor` of the mounted filesystem (for FUSE, minor names the connection). */
  dev: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Every mount of this process' mount namespace, in mount order. */
export async function listMounts(): Promise<MountInfo[]> {
  const text = await fsp.readFile("/proc/self/mountinfo", "utf8");
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [left, right] = line.split(" - ");
    const f = left.split(" ");
    const r = (right ?? "").split(" ");
    out.push({
      dev: f[2],
      mountpoint: unescapeMountinfo(f[4]),
      fstype: r[0] ?? "",
      source: unescapeMountinfo(r[1] ?? ""),
    });
  }
  return out;
}

/** The topmost mount at `mountpoint`, if any. */
export async function findMount(mountpoint: string): Promise<MountInfo | undefined> {
  const all = await listMounts();
  for (let i = all.length - 1; i >= 0; i--) if (all[i].mountpoint === mountpoint) return all[i];
  return undefined;
}

const FUSECTL = "/sys/fs/fuse/connections";

/**
 * Aborts the FUSE connection `dev` (`major:minor` of the mount) through fusectl, mounting fusectl
 * first if nobody has: every request waiting on us fails and our blocked device reads return
 * ENODEV. The last resort when a lazily unmounted filesystem is still held open.
 */
export async function abortConnection(dev: string): Promise<boolean> {
  const minor = dev.split(":")[1];
  const path = `${FUSECTL}/${minor}/abort`;
  try {
    await fsp.access(path);
  } catch {
    await run(["mount", "-t", "fusectl", "fusectl", FUSECTL]);
  }
  try {
    await fsp.writeFile(path, "1");
    return true;
  } catch {
    return false;
  }
}

/**
 * {@link abortConnection} for process exit, where nothing asynchronous runs any more: once our
 * request loop is gone, the exit's own close() of a file on the mount would wait forever for the
 * FLUSH answer that only this process could give.
 */
export function abortConnectionSync(dev: string): void {
  const path = `${FUSECTL}/${dev.split(":")[1]}/abort`;
  if (!fs.existsSync(path)) {
    spawnSync("mount", ["-t", "fusectl", "fusectl", FUSECTL], { stdio: "ignore" });
  }
  try {
    fs.writeFileSync(path, "1");
  } catch {
    // Already gone.
  }
}

/** Sets the kernel readahead of the mount `dev` in bytes (best effort: false when refused). */
export async function setReadahead(dev: string, bytes: number): Promise<boolean> {
  try {
    await fsp.writeFile(`/sys/class/bdi/${dev}/read_ahead_kb`, String(Math.ceil(bytes / 1024)));
    return true;
  } catch {
    return false;
  }
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
