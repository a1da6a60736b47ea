/**
 * A remote-layer {@link FileSystem} for tests: "remote" layers are prepared directories,
 * bind-mounted read-only at the snapshot's mount point (a real mount, like the FUSE one).
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import { promisify } from "node:util";
import { type FileSystem, remoteSource } from "../src/snapshot/mod.ts";

const run = promisify(execFile);

async function isMountPoint(dir: string): Promise<boolean> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8");
  return text.split("\n").some((l) => l.split(" ")[4] === dir);
}

/** Serves layers by digest from local directories via read-only bind mounts. */
export class BindLayerFs implements FileSystem {
  /** Layer digest → directory holding the layer's files. */
  readonly layers = new Map<string, string>();
  /** Mount points whose check should fail (simulates a lost registry). */
  readonly broken = new Set<string>();
  /** Digests whose mount should fail. */
  readonly refuse = new Set<string>();
  /** Mount points currently mounted by this instance. */
  readonly mounted = new Set<string>();
  /** Every call, as "mount <mp>", "check <mp>", "unmount <mp>". */
  readonly calls: string[] = [];
  /** Delay before each mount completes (to observe restores in progress). */
  mountDelayMs = 0;

  async mount(mountpoint: string, labels: Record<string, string>): Promise<void> {
    this.calls.push(`mount ${mountpoint}`);
    const src = remoteSource(labels);
    if (!src) throw new Error("no source labels");
    const dir = this.layers.get(src.digest);
    if (!dir || this.refuse.has(src.digest)) throw new Error(`layer ${src.digest} is not remote`);
    if (this.mountDelayMs) await new Promise((r) => setTimeout(r, this.mountDelayMs));
    await run("mount", ["--bind", dir, mountpoint]);
    await run("mount", ["-o", "remount,bind,ro", mountpoint]);
    this.mounted.add(mountpoint);
  }

  async check(mountpoint: string): Promise<void> {
    this.calls.push(`check ${mountpoint}`);
    if (this.broken.has(mountpoint)) throw new Error("connection to registry lost");
    if (!(await isMountPoint(mountpoint))) throw new Error(`${mountpoint} is not mounted`);
  }

  async unmount(mountpoint: string): Promise<void> {
    this.calls.push(`unmount ${mountpoint}`);
    await run("umount", [mountpoint]);
    this.mounted.delete(mountpoint);
  }
}
