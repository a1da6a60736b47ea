/**
 * A fleet for load tests and the soak benchmark: one registry, our daemon, one containerd, and
 * `images` eStargz images (busybox plus a data layer of incompressible files each), pulled
 * through CRI; containers of them started together with `ctr run -d`.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupDir, startContainerd, startStargz } from "./_containerd.ts";
import type { Containerd, StargzProcess } from "./_containerd.ts";
import { criPull } from "./_cri.ts";
import { estargzLayer, makeBusyboxRoot, patternBytes, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { startRegistry } from "./_registry.ts";
import type { TestRegistry } from "./_registry.ts";

/** One file of an image's data layer. */
export interface FleetFile {
  /** Absolute path inside the container. */
  path: string;
  size: number;
  sha256: string;
}

/** One pulled image. */
export interface FleetImage {
  ref: string;
  files: FleetFile[];
}

/** A running fleet. */
export interface Fleet {
  readonly dir: string;
  readonly registry: TestRegistry;
  readonly daemon: StargzProcess;
  readonly containerd: Containerd;
  readonly images: FleetImage[];
  readonly adminSocket: string;
  /** Starts one detached container per entry (all at once); resolves with their names. */
  start(images: readonly FleetImage[], command: readonly string[]): Promise<string[]>;
  /** The host pid of a running container's init process. */
  pid(name: string): Promise<number>;
  /** Kills and removes the containers. */
  remove(names: readonly string[]): Promise<void>;
  stop(): Promise<void>;
}

/** What {@link startFleet} builds. */
export interface FleetOptions {
  images: number;
  filesPerImage: number;
  fileSize: number;
  /** Extra lines of the daemon's config.toml (the admin socket is always set). */
  config?: string[];
}

/** Builds the images, starts registry, daemon and containerd, and pulls every image. */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-fleet-"));
  const adminSocket = path.join(dir, "admin.sock");
  let registry: TestRegistry | undefined;
  let daemon: StargzProcess | undefined;
  let containerd: Containerd | undefined;
  const stop = async () => {
    await containerd?.stop();
    await daemon?.stop();
    await registry?.stop();
    await cleanupDir(dir);
  };
  try {
    const bbRoot = path.join(dir, "bb");
    makeBusyboxRoot(bbRoot);
    tarDir(bbRoot, path.join(dir, "busybox.tar"));
    const busybox = await estargzLayer(path.join(dir, "busybox.tar"));
    registry = await startRegistry();
    const built: { layer: BuiltLayer; files: FleetFile[] }[] = [];
    for (let i = 0; i < opts.images; i++) {
      const root = path.join(dir, `data${i}`);
      fs.mkdirSync(path.join(root, "data"), { recursive: true });
      const files: FleetFile[] = [];
      for (let f = 0; f < opts.filesPerImage; f++) {
        const data = patternBytes(opts.fileSize, i * 10_000 + f + 1);
        fs.writeFileSync(path.join(root, "data", `f${f}`), data);
        files.push({
          path: `/data/f${f}`,
          size: data.length,
          sha256: createHash("sha256").update(data).digest("hex"),
        });
      }
      tarDir(root, `${root}.tar`);
      built.push({ layer: await estargzLayer(`${root}.tar`), files });
      fs.rmSync(root, { recursive: true });
    }
    fs.writeFileSync(
      path.join(dir, "config.toml"),
      [...(opts.config ?? []), "[admin]", `address = "${adminSocket}"`, ""].join("\n"),
    );
    daemon = await startStargz({ dir, args: ["--config", path.join(dir, "config.toml")] });
    containerd = await startContainerd({ dir, snapshotterAddress: daemon.address });
    const images: FleetImage[] = [];
    for (const [i, b] of built.entries()) {
      const img = await pushLayers(registry, `fleet/app${i}`, "v1", [busybox, b.layer]);
      await criPull(containerd.address, img.ref);
      images.push({ ref: img.ref, files: b.files });
    }
    const ctd = containerd;
    let seq = 0;
    return {
      dir,
      registry,
      daemon,
      containerd,
      images,
      adminSocket,
      async start(which, command) {
        const names = which.map(() => `fleet-${process.pid}-${seq++}`);
        await Promise.all(which.map((img, i) =>
          ctd.ctrOk(
            ["run", "-d", "--snapshotter", "stargz", img.ref, names[i], ...command],
            { namespace: "k8s.io", timeoutMs: 600_000 },
          )
        ));
        return names;
      },
      async pid(name) {
        const out = await ctd.ctrOk(["task", "ls"], { namespace: "k8s.io" });
        const line = out.split("\n").find((l) => l.split(/\s+/)[0] === name);
        const pid = Number(line?.split(/\s+/)[1]);
        if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no task ${name}: ${out}`);
        return pid;
      },
      async remove(names) {
        await Promise.all(names.map(async (n) => {
          await ctd.ctr(["task", "kill", "-s", "SIGKILL", n], { namespace: "k8s.io" });
          // `task rm` refuses a task that has not exited yet: wait for it.
          await ctd.ctr(["task", "wait", n], { namespace: "k8s.io", timeoutMs: 60_000 });
          await ctd.ctrOk(["task", "rm", "-f", n], { namespace: "k8s.io" }).catch(() => {});
          await ctd.ctrOk(["container", "rm", n], { namespace: "k8s.io" });
        }));
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
