/**
 * Lazy layer filesystem benchmarks, against a local `docker-registry` started here, with
 * `stargz mount REF --layer DIGEST MOUNTPOINT` run as a child process (the current runtime):
 *
 * 1. Cold read of every file of a realistic rootfs layer (files of this machine's /usr, about
 *    STARGZ_BENCH_ROOTFS_MB, default 100) through a fresh mount without prefetch or background
 *    fetch (`find -type f -exec cat`), mount time included, next to `curl` downloading the same
 *    blob plus `tar -xzf` of it (to local disk, and to tmpfs); the CPU time the mount process and
 *    the registry spent shows who paid for it. Then the same with 8 parallel readers.
 * 2. Warm sequential read of the layer's largest file (`dd bs=1M`, read again after the cold
 *    read) next to the same file extracted on local disk; both come from the page cache, so a
 *    second pair with `iflag=direct` shows the daemon's own read path (chunk cache) against the
 *    local disk without page cache.
 * 3. `find -ls` over a generated layer of STARGZ_BENCH_ENTRIES entries (default 100,000): first
 *    pass through a fresh mount (every lookup answered by the daemon) and repeated passes,
 *    next to `find -ls` over the same tree on local disk.
 * 4. Resident memory (VmRSS) of the mount process with that layer mounted.
 *
 * `npm run bench -- layer` (env STARGZ_BENCH_ROOTFS_MB, STARGZ_BENCH_ENTRIES, STARGZ_BENCH_ROUNDS)
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runtimeVersion } from "../src/runtime/mod.ts";
import { startCli, waitExit } from "../test/_cli.ts";
import { estargzLayer, pushLayers } from "../test/_images.ts";
import { isMounted } from "../test/_layer.ts";
import { startRegistry } from "../test/_registry.ts";
import type { TestRegistry } from "../test/_registry.ts";
import { median, printResult, printTable } from "./_result.ts";
import { makeManyEntries, sampleTree } from "./_rootfs.ts";
import { run, shell } from "./_run.ts";

const ROOTFS_MB = Number(process.env.STARGZ_BENCH_ROOTFS_MB ?? 100);
const ENTRIES = Number(process.env.STARGZ_BENCH_ENTRIES ?? 100_000);
const ROUNDS = Number(process.env.STARGZ_BENCH_ROUNDS ?? 3);
/** A dd of the largest file takes milliseconds: more rounds for a steadier median. */
const DD_ROUNDS = 3 * ROUNDS;
const ROOTS = ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/share", "/usr/libexec"];
/** The largest file of the rootfs (the one read sequentially) is at most this big. */
const BIG_FILE_MAX = 64 << 20;
/** Readers of the parallel cold read. */
const PARALLEL = 8;

/** A running `stargz mount` child. */
interface MountProcess {
  pid: number;
  mountpoint: string;
  stop(): Promise<void>;
}

const mounts = new Set<MountProcess>();

/** Starts `stargz mount args… mountpoint` and waits until the mount is there. */
async function startMount(args: readonly string[], mountpoint: string): Promise<MountProcess> {
  const child = startCli(["mount", "--log-level", "warn", ...args, mountpoint]);
  // Long enough for the slowest cold read at the sizes this benchmark allows.
  const done = waitExit(child, 24 * 3600_000);
  let exited = false;
  done.then(() => (exited = true));
  const m: MountProcess = {
    pid: child.pid!,
    mountpoint,
    async stop() {
      mounts.delete(m);
      if (!exited) process.kill(m.pid, "SIGTERM");
      const timer = setTimeout(() => !exited && child.kill("SIGKILL"), 20_000);
      const r = await done;
      clearTimeout(timer);
      if (isMounted(mountpoint)) await run(["umount", "-l", mountpoint]);
      if (r.code !== 0) console.error(`stargz mount exited ${r.code}: ${r.stderr.trim()}`);
    },
  };
  mounts.add(m);
  const deadline = Date.now() + 120_000;
  while (!isMounted(mountpoint)) {
    if (exited) {
      const r = await done;
      mounts.delete(m);
      throw new Error(`stargz mount exited ${r.code}: ${r.stderr.trim()}`);
    }
    if (Date.now() > deadline) {
      await m.stop();
      throw new Error("stargz mount did not mount within 120 s");
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return m;
}

/** VmRSS of a process in MB (1e6 bytes). */
function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no VmRSS for pid ${pid}`);
  return (kb * 1024) / 1e6;
}

/** User + system CPU seconds a process has used so far (clock ticks of 1/100 s on Linux). */
function cpuSecs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The pid of the `docker-registry` serving from `dir` (the helper does not expose its child). */
function registryPid(dir: string): number {
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, "utf8");
      const argv = cmd.split("\0");
      if (path.basename(argv[0]) === "docker-registry" && cmd.includes(dir)) return Number(name);
    } catch {
      // the process ended while we looked
    }
  }
  throw new Error("registry process not found");
}

/** Converts `tarFile` with our converter and pushes it as a one-layer image. */
async function pushLayer(reg: TestRegistry, tarFile: string, repo: string) {
  const t0 = performance.now();
  const layer = await estargzLayer(tarFile);
  const convertS = (performance.now() - t0) / 1000;
  const image = await pushLayers(reg, repo, "esgz", [layer]);
  return { ref: image.ref, digest: image.layers[0].digest, size: layer.data.length, convertS };
}

/** MB/s of one `dd if=file of=/dev/null bs=1M [iflag=direct]`, as dd reports it. */
async function ddMbps(file: string, direct = false): Promise<number> {
  const r = await run([
    "dd",
    `if=${file}`,
    "of=/dev/null",
    "bs=1M",
    ...(direct ? ["iflag=direct"] : []),
  ]);
  const m = /^(\d+) bytes .* copied, ([\d.e+-]+) s/m.exec(r.stderr);
  if (!m) throw new Error(`unexpected dd output: ${r.stderr}`);
  return Number(m[1]) / 1e6 / Number(m[2]);
}

/** Median MB/s of DD_ROUNDS dd runs, or undefined when the read is refused (e.g. no O_DIRECT). */
async function ddMedian(file: string, direct = false): Promise<number | undefined> {
  const xs: number[] = [];
  for (let i = 0; i < DD_ROUNDS; i++) {
    try {
      xs.push(await ddMbps(file, direct));
    } catch (err) {
      if (direct) return undefined;
      throw err;
    }
  }
  return median(xs);
}

/** Seconds and lines of `find dir -ls`. */
async function findLs(dir: string): Promise<{ secs: number; lines: number }> {
  const r = await shell('find "$1" -ls | wc -l', dir);
  return { secs: r.secs, lines: Number(r.stdout.trim()) };
}

/**
 * Seconds (mount included) to read every file through another fresh mount with PARALLEL
 * readers, as a container starting several processes would.
 */
async function coldParallel(
  layer: { ref: string; digest: string },
  mountpoint: string,
  expectBytes: number,
): Promise<number> {
  fs.mkdirSync(mountpoint);
  const t0 = performance.now();
  const m = await startMount(
    [layer.ref, "--layer", layer.digest, "--no-background-fetch", "--no-prefetch"],
    mountpoint,
  );
  try {
    const r = await shell(
      `find "$1" -type f -print0 | xargs -0 -P ${PARALLEL} -n 64 cat | wc -c`,
      mountpoint,
    );
    if (Number(r.stdout.trim()) !== expectBytes) {
      throw new Error(`read ${r.stdout.trim()} bytes through the mount, expected ${expectBytes}`);
    }
    return (performance.now() - t0) / 1000;
  } finally {
    await m.stop();
  }
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-bench-layer-"));
let reg: TestRegistry | undefined;

async function cleanup(): Promise<void> {
  for (const m of [...mounts]) await m.stop().catch((e) => console.error(e));
  await reg?.stop();
  fs.rmSync(work, { recursive: true, force: true });
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`${sig}: cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

try {
  reg = await startRegistry();

  // Layers: a rootfs sampled from /usr, and a tree of ENTRIES tiny entries.
  const sampled = sampleTree(ROOTS, ROOTFS_MB * 1e6, Math.min(BIG_FILE_MAX, ROOTFS_MB * 1e6 / 4));
  // Paths without the leading slash, for `tar -C /`.
  const rootfs = { entries: sampled.entries.map((p) => p.slice(1)), big: sampled.big!.slice(1) };
  const listFile = path.join(work, "rootfs.list");
  fs.writeFileSync(listFile, rootfs.entries.join("\0") + "\0");
  const rootfsTar = path.join(work, "rootfs.tar");
  await run([
    "tar",
    "--numeric-owner",
    "--no-recursion",
    "--null",
    "-C",
    "/",
    "-cf",
    rootfsTar,
    "-T",
    listFile,
  ]);
  const rootfsTarMb = fs.statSync(rootfsTar).size / 1e6;
  const rootLayer = await pushLayer(reg, rootfsTar, "bench/rootfs");
  fs.rmSync(`${rootfsTar}.esgz`);

  const manyDir = path.join(work, "many");
  makeManyEntries(manyDir, ENTRIES);
  const manyTar = path.join(work, "many.tar");
  await run(["tar", "--numeric-owner", "-C", manyDir, "-cf", manyTar, "."]);
  const manyLayer = await pushLayer(reg, manyTar, "bench/many");
  fs.rmSync(`${manyTar}.esgz`);
  console.log(
    `${runtimeVersion()}, ${os.cpus().length} cpus; rootfs layer: ${rootfs.entries.length} ` +
      `entries, ${rootfsTarMb.toFixed(1)} MB tar, ${(rootLayer.size / 1e6).toFixed(1)} MB ` +
      `eStargz (converted in ${rootLayer.convertS.toFixed(1)} s); many-entry layer: ` +
      `${ENTRIES} entries, ${(manyLayer.size / 1e6).toFixed(1)} MB eStargz`,
  );

  // 1. Cold read: curl + tar -xzf, then every file through a fresh lazy mount.
  const blobFile = path.join(work, "rootfs.blob");
  const extracted = path.join(work, "extracted");
  const url = `${reg.url}/v2/bench/rootfs/blobs/${rootLayer.digest}`;
  // The baseline is cheap and the machine noisy: median of ROUNDS, keeping the last tree. The
  // tree goes to local disk as containerd's would; the same into tmpfs shows the cost of the
  // disk (file creation on this machine's ext4 is slow).
  const untarInto = (dir: string) =>
    run([
      "tar",
      "-xzf",
      blobFile,
      "-C",
      dir,
      "--exclude=stargz.index.json",
      "--exclude=.prefetch.landmark",
      "--exclude=.no.prefetch.landmark",
    ]);
  const shm = fs.existsSync("/dev/shm")
    ? fs.mkdtempSync("/dev/shm/stargz-bench-layer-")
    : undefined;
  const curlS: number[] = [];
  const untarS: number[] = [];
  const untarShmS: number[] = [];
  try {
    for (let i = 0; i < ROUNDS; i++) {
      fs.rmSync(extracted, { recursive: true, force: true });
      fs.mkdirSync(extracted);
      curlS.push((await run(["curl", "-sfL", "-o", blobFile, url])).secs);
      untarS.push((await untarInto(extracted)).secs);
      if (shm) {
        const into = path.join(shm, String(i));
        fs.mkdirSync(into);
        untarShmS.push((await untarInto(into)).secs);
        fs.rmSync(into, { recursive: true, force: true });
      }
      fs.rmSync(blobFile);
    }
  } finally {
    if (shm) fs.rmSync(shm, { recursive: true, force: true });
  }
  const baselineShmS = shm ? median(curlS.map((c, i) => c + untarShmS[i])) : undefined;
  const baselineS = median(curlS.map((c, i) => c + untarS[i]));
  const sizes = await shell(
    "find \"$1\" -type f -printf '%s\\n' | awk '{n++; s+=$1} END {print n, s}'",
    extracted,
  );
  const [fileCount, fileBytes] = sizes.stdout.trim().split(" ").map(Number);

  const rootMp = path.join(work, "mnt-rootfs");
  fs.mkdirSync(rootMp);
  const regPid = registryPid(reg.dir);
  const regCpu0 = cpuSecs(regPid);
  const t0 = performance.now();
  const rootMount = await startMount(
    [rootLayer.ref, "--layer", rootLayer.digest, "--no-background-fetch", "--no-prefetch"],
    rootMp,
  );
  const mountS = (performance.now() - t0) / 1000;
  const cold = await shell('find "$1" -type f -exec cat {} + | wc -c', rootMp);
  const coldS = mountS + cold.secs;
  const mountCpu = cpuSecs(rootMount.pid);
  const regCpu = cpuSecs(regPid) - regCpu0;
  if (Number(cold.stdout.trim()) !== fileBytes) {
    throw new Error(`read ${cold.stdout.trim()} bytes through the mount, expected ${fileBytes}`);
  }
  const parallel = await coldParallel(rootLayer, path.join(work, "mnt-parallel"), fileBytes);
  const state = JSON.parse(
    fs.readFileSync(
      path.join(rootMp, ".stargz-snapshotter", `${rootLayer.digest}.json`),
      "utf8",
    ),
  ) as { fetchedPercent: number };
  const rootRss = rssMb(rootMount.pid);

  // 2. Warm sequential read of the largest file, then the same without page cache.
  const bigSize = fs.statSync(path.join(extracted, rootfs.big)).size;
  const warm = (await ddMedian(path.join(rootMp, rootfs.big)))!;
  const warmLocal = (await ddMedian(path.join(extracted, rootfs.big)))!;
  const direct = await ddMedian(path.join(rootMp, rootfs.big), true);
  const directLocal = await ddMedian(path.join(extracted, rootfs.big), true);
  await rootMount.stop();
  fs.rmSync(extracted, { recursive: true, force: true });

  // 3. find -ls over the many-entry layer; 4. RSS of its mount process.
  const manyMp = path.join(work, "mnt-many");
  fs.mkdirSync(manyMp);
  const t1 = performance.now();
  const manyMount = await startMount(
    [manyLayer.ref, "--layer", manyLayer.digest, "--no-background-fetch"],
    manyMp,
  );
  const manyMountS = (performance.now() - t1) / 1000;
  const rssIdle = rssMb(manyMount.pid);
  const first = await findLs(manyMp);
  const rssAfter = rssMb(manyMount.pid);
  const again: number[] = [];
  for (let i = 0; i < ROUNDS; i++) again.push((await findLs(manyMp)).secs);
  await manyMount.stop();
  // The same with attributes and names cached by the kernel for an hour (fine for immutable
  // layers; 1 s is upstream's default, and the default above).
  const longConfig = path.join(work, "long-timeouts.toml");
  fs.writeFileSync(longConfig, "[fuse]\nattr_timeout = 3600\nentry_timeout = 3600\n");
  const longMp = path.join(work, "mnt-many-long");
  fs.mkdirSync(longMp);
  const longMount = await startMount(
    [manyLayer.ref, "--layer", manyLayer.digest, "--no-background-fetch", "--config", longConfig],
    longMp,
  );
  const longFirst = await findLs(longMp);
  const longAgain: number[] = [];
  for (let i = 0; i < ROUNDS; i++) longAgain.push((await findLs(longMp)).secs);
  await longMount.stop();
  await findLs(manyDir); // the tree was just written: make sure it is all in the dentry cache
  const local: number[] = [];
  let localLines = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const r = await findLs(manyDir);
    local.push(r.secs);
    localLines = r.lines;
  }
  if (first.lines !== localLines) {
    throw new Error(
      `find -ls listed ${first.lines} entries through the mount, ${localLines} local`,
    );
  }
  const findOps = first.lines / first.secs;
  const findWarmOps = first.lines / median(again);
  const findLocalOps = localLines / median(local);
  const longFirstOps = longFirst.lines / longFirst.secs;
  const longAgainOps = longFirst.lines / median(longAgain);

  const fmtS = (s: number) => s.toFixed(2);
  console.log(
    `\nrootfs: ${fileCount} files, ${(fileBytes / 1e6).toFixed(1)} MB; largest file ` +
      `/${rootfs.big} (${
        (bigSize / 1e6).toFixed(1)
      } MB); baselines and repeats: medians of ${ROUNDS} ` +
      `rounds (dd: ${DD_ROUNDS})`,
  );
  printTable(["measure", "stargz", "baseline", "ratio", "notes"], [
    [
      "cold read of every file (s)",
      coldS,
      baselineS,
      coldS / baselineS,
      `mount ${fmtS(mountS)} + read ${fmtS(cold.secs)} vs curl ${fmtS(median(curlS))} + ` +
      `tar -xzf ${fmtS(median(untarS))}; fetched ${
        state.fetchedPercent.toFixed(1)
      }% of the blob; CPU: mount ` +
      `process ${fmtS(mountCpu)} s, registry ${fmtS(regCpu)} s`,
    ],
    ...(baselineShmS !== undefined
      ? [[
        "cold read vs extraction into tmpfs (s)",
        coldS,
        baselineShmS,
        coldS / baselineShmS,
        "same cold read; baseline tar -xzf into /dev/shm",
      ]]
      : []),
    [
      `cold read, ${PARALLEL} parallel readers (s)`,
      parallel,
      baselineS,
      parallel / baselineS,
      `find | xargs -P ${PARALLEL} cat, mount included`,
    ],
    ["warm sequential read (MB/s)", warm, warmLocal, warm / warmLocal, "dd bs=1M, page cache"],
    ...(direct !== undefined && directLocal !== undefined
      ? [[
        "read, no page cache (MB/s)",
        direct,
        directLocal,
        direct / directLocal,
        "dd bs=1M iflag=direct: daemon chunk cache vs local disk",
      ]]
      : []),
    [
      `find -ls ${first.lines} entries, first pass (ops/s)`,
      findOps,
      findLocalOps,
      findOps / findLocalOps,
      `${fmtS(first.secs)} s; mount took ${fmtS(manyMountS)} s`,
    ],
    [
      "find -ls again (ops/s)",
      findWarmOps,
      findLocalOps,
      findWarmOps / findLocalOps,
      "1 s timeouts expired: a LOOKUP per entry",
    ],
    [
      "find -ls, 3600 s timeouts, first pass (ops/s)",
      longFirstOps,
      findLocalOps,
      longFirstOps / findLocalOps,
      "[fuse] attr_timeout = entry_timeout = 3600",
    ],
    [
      "find -ls, 3600 s timeouts, again (ops/s)",
      longAgainOps,
      findLocalOps,
      longAgainOps / findLocalOps,
      "kernel dentry/attr cache, READDIR only",
    ],
    [
      "mount process RSS, many-entry layer (MB)",
      rssAfter,
      "",
      "",
      `${fmtS(rssIdle)} MB before find`,
    ],
    ["mount process RSS, rootfs after cold read (MB)", rootRss, "", "", ""],
  ]);
  printResult("layer", {
    cold_s: coldS,
    cold_baseline_s: baselineS,
    cold_ratio: coldS / baselineS,
    cold_parallel_s: parallel,
    ...(baselineShmS !== undefined ? { cold_tmpfs_ratio: coldS / baselineShmS } : {}),
    warm_mbps: warm,
    warm_ratio: warm / warmLocal,
    find_ops: findOps,
    find_ratio: findOps / findLocalOps,
    rss_mb: rssAfter,
  });
} finally {
  await cleanup();
}
