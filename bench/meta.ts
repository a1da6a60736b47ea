/**
 * Metadata and warm reads through the snapshotter daemon, side by side with the Go reference
 * when `STARGZ_REF_BIN` names its `containerd-stargz-grpc` (see ../shared/ref-go/README.md).
 *
 * Each daemon runs as containerd's `stargz` proxy snapshotter (a private containerd each, from
 * test/_containerd.ts) with the same config (upstream defaults plus `no_background_fetch`, so
 * the FUSE timeouts are 1 s), and `ctr-remote image rpull` (from `STARGZ_REF_CTR_REMOTE`, default
 * beside `STARGZ_REF_BIN`) pulls the same one-layer eStargz image from one local registry: a
 * tree of STARGZ_BENCH_ENTRIES entries (default 100,000: directories of 99 tiny files) plus one
 * file of STARGZ_BENCH_BIG_MB (default 32). Then, on the host, over each daemon's layer mount:
 *
 * 1. `find -ls` of the whole tree: the first (cold) pass, then passes 2 s later (the kernel's
 *    entries and attributes expired: only what the daemon answers counts), with the daemon's
 *    CPU seconds for those passes;
 * 2. a stat storm: `stat` of every 5th file by path, in a shuffled order, 2 s after the last
 *    walk, so that every stat reaches the daemon (a LOOKUP per name; what an interpreter's
 *    imports do);
 * 3. random 4 KiB O_DIRECT reads (`xfs_io pread -R`) of the big file, after it was read once
 *    (warm in the daemon's cache), and sequential O_DIRECT reads (`dd bs=1M iflag=direct`),
 *    medians of 4 × STARGZ_BENCH_ROUNDS passes;
 * 4. the daemon's resident memory (VmRSS) with the layer mounted and walked, and its peak
 *    (VmHWM).
 *
 * `npm run bench -- meta` (Bun) or `deno run -A bench/run.ts meta` (Deno); env
 * STARGZ_REF_BIN, STARGZ_BENCH_ENTRIES, STARGZ_BENCH_BIG_MB, STARGZ_BENCH_ROUNDS.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runtimeVersion, scriptCommand } from "../src/runtime/mod.ts";
import {
  cleanupDir,
  REPO_ROOT,
  socketAnswers,
  startContainerd,
  waitUntil,
} from "../test/_containerd.ts";
import type { Containerd } from "../test/_containerd.ts";
import { estargzLayer, patternBytes, pushLayers } from "../test/_images.ts";
import { startRegistry } from "../test/_registry.ts";
import type { TestRegistry } from "../test/_registry.ts";
import { median, printResult, printTable } from "./_result.ts";
import { makeManyEntries } from "./_rootfs.ts";
import { daemonFlags, run, shell } from "./_run.ts";

const ENTRIES = Number(process.env.STARGZ_BENCH_ENTRIES ?? 100_000);
const BIG_MB = Number(process.env.STARGZ_BENCH_BIG_MB ?? 32);
const ROUNDS = Number(process.env.STARGZ_BENCH_ROUNDS ?? 3);
const REF_BIN = process.env.STARGZ_REF_BIN;
const CTR_REMOTE = process.env.STARGZ_REF_CTR_REMOTE ??
  (REF_BIN ? path.join(path.dirname(REF_BIN), "ctr-remote") : "/tmp/stargz-ref/ctr-remote");
/** Longer than the 1 s FUSE timeouts both daemons default to. */
const PAST_TIMEOUTS_MS = 2000;
/** Files of the stat storm: every STAT_EVERY-th. */
const STAT_EVERY = 5;
const CONFIG = "no_background_fetch = true\n";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A snapshotter daemon in a child process. */
interface Daemon {
  name: string;
  child: ChildProcess;
  root: string;
  address: string;
  logs(): string;
  stop(): Promise<void>;
}

async function startDaemon(name: string, argv: string[], root: string, address: string) {
  const child = spawn(argv[0], argv.slice(1), {
    cwd: REPO_ROOT,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let logs = "";
  child.stderr!.on("data", (d) => {
    logs += d;
    if (logs.length > 1 << 20) logs = logs.slice(-(1 << 19));
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const d: Daemon = {
    name,
    child,
    root,
    address,
    logs: () => logs,
    async stop() {
      // SIGINT: both unmount their layers and exit.
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGINT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
  await waitUntil(
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited: ${logs.slice(-4000)}`);
      return await socketAnswers(address);
    },
    60_000,
    `${name} socket`,
  );
  return d;
}

/** FUSE mounts at or below `dir`. */
function fuseMountsUnder(dir: string): string[] {
  return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").flatMap((l) => {
    const f = l.split(" ");
    const fstype = f[f.indexOf("-") + 1] ?? "";
    const mp = (f[4] ?? "").replace(
      /\\([0-7]{3})/g,
      (_m, o) => String.fromCharCode(parseInt(o, 8)),
    );
    return fstype.startsWith("fuse") && mp.startsWith(dir + "/") ? [mp] : [];
  });
}

function procStatus(pid: number, field: string): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no ${field} for pid ${pid}`);
  return kb / 1024;
}

/** User + system CPU seconds of a process (all its threads). */
function cpuSecs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** What one daemon measured. */
interface Figures {
  findFirstS: number;
  findAgainS: number;
  findAgainCpuS: number;
  statS: number;
  statCpuS: number;
  rand4kIops: number;
  seqMBps: number;
  rssMiB: number;
  peakMiB: number;
  lines: number;
}

async function findLs(dir: string): Promise<{ secs: number; lines: number }> {
  const r = await shell('find "$1" -ls | wc -l', dir);
  return { secs: r.secs, lines: Number(r.stdout.trim()) };
}

/** Pulls the image through `ctd` and measures over the layer mount `daemon` made. */
async function measure(
  daemon: Daemon,
  ctd: Containerd,
  ref: string,
  statList: string[],
  bigSize: number,
): Promise<Figures> {
  const pull = await run([
    CTR_REMOTE,
    "--address",
    ctd.address,
    "-n",
    "bench",
    "image",
    "rpull",
    "--plain-http",
    "--snapshotter",
    "stargz",
    ref,
  ]).catch((err) => {
    throw new Error(`${daemon.name}: ${(err as Error).message}\n${daemon.logs().slice(-3000)}`);
  });
  const mps = fuseMountsUnder(daemon.root);
  if (mps.length !== 1) {
    throw new Error(`${daemon.name}: ${mps.length} layer mounts after rpull: ${pull.stderr}`);
  }
  const mp = mps[0];
  const pid = daemon.child.pid!;
  const first = await findLs(mp);
  const again: number[] = [];
  const againCpu: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    await sleep(PAST_TIMEOUTS_MS);
    const c0 = cpuSecs(pid);
    again.push((await findLs(mp)).secs);
    againCpu.push(cpuSecs(pid) - c0);
  }
  const listFile = path.join(daemon.root, "..", `${daemon.name}-stat.list`);
  fs.writeFileSync(listFile, statList.map((p) => path.join(mp, p)).join("\0") + "\0");
  const stats: number[] = [];
  const statCpu: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    await sleep(PAST_TIMEOUTS_MS);
    const c0 = cpuSecs(pid);
    stats.push((await shell('xargs -0 stat -c %s < "$1" > /dev/null', listFile)).secs);
    statCpu.push(cpuSecs(pid) - c0);
  }
  const big = path.join(mp, "big.bin");
  const whole = await shell('cat "$1" | wc -c', big);
  if (Number(whole.stdout.trim()) !== bigSize) throw new Error(`${daemon.name}: short read`);
  // One direct pass too: the first one after `cat` still pays for what the page cache hid.
  await run(["dd", `if=${big}`, "of=/dev/null", "bs=1M", "iflag=direct"]);
  // Many short passes in one process, and the median of all: one pass takes tens of ms, so a
  // single one measures mostly whether the scheduler of a shared machine looked away.
  const passes = 4 * ROUNDS;
  const x = await run([
    "xfs_io",
    "-d",
    "-r",
    ...Array.from({ length: passes }, (_, i) => [
      "-c",
      `pread -R -Z ${i + 1} -b 4096 0 ${bigSize}`,
    ]).flat(),
    big,
  ]);
  const rand = [...x.stdout.matchAll(/([\d.]+) ops\/sec/g)].map((m) => Number(m[1]));
  if (rand.length !== passes) throw new Error(`unexpected xfs_io output: ${x.stdout}`);
  const seq: number[] = [];
  for (let i = 0; i < passes; i++) {
    const d = await run(["dd", `if=${big}`, "of=/dev/null", "bs=1M", "iflag=direct"]);
    seq.push(bigSize / 1e6 / Number(/copied, ([\d.e+-]+) s/.exec(d.stderr)?.[1] ?? NaN));
  }
  return {
    findFirstS: first.secs,
    findAgainS: median(again),
    findAgainCpuS: median(againCpu),
    statS: median(stats),
    statCpuS: median(statCpu),
    rand4kIops: median(rand),
    seqMBps: median(seq),
    rssMiB: procStatus(pid, "VmRSS"),
    peakMiB: procStatus(pid, "VmHWM"),
    lines: first.lines,
  };
}

/** Deterministic shuffle (so both daemons stat in the same order). */
function shuffled<T>(xs: T[]): T[] {
  let seed = 12345;
  for (let i = xs.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % (i + 1);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-bench-meta-"));
let reg: TestRegistry | undefined;
const stops: (() => Promise<void>)[] = [];

async function cleanup(): Promise<void> {
  for (const stop of stops.reverse()) await stop().catch((e) => console.error(e));
  await reg?.stop();
  await cleanupDir(work);
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`${sig}: cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

/** Starts a daemon plus its containerd, pulls, measures, stops both. */
async function side(
  name: string,
  argv: (root: string, address: string, config: string) => string[],
  ref: string,
  statList: string[],
  bigSize: number,
): Promise<Figures> {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  const config = path.join(dir, "config.toml");
  fs.writeFileSync(config, CONFIG);
  const root = path.join(dir, "root");
  const address = path.join(dir, "sgz.sock");
  const daemon = await startDaemon(name, argv(root, address, config), root, address);
  stops.push(() => daemon.stop());
  const ctd = await startContainerd({ dir, snapshotterAddress: address });
  stops.push(() => ctd.stop());
  try {
    return await measure(daemon, ctd, ref, statList, bigSize);
  } finally {
    await ctd.stop();
    await daemon.stop();
    stops.splice(-2);
  }
}

try {
  reg = await startRegistry();
  const treeDir = path.join(work, "tree");
  makeManyEntries(treeDir, ENTRIES);
  const bigSize = BIG_MB << 20;
  fs.writeFileSync(path.join(treeDir, "big.bin"), patternBytes(bigSize, 7));
  const tarFile = path.join(work, "tree.tar");
  await run(["tar", "--numeric-owner", "-C", treeDir, "-cf", tarFile, "."]);
  const files = (await shell('cd "$1" && find . -type f -name "file-*"', treeDir)).stdout
    .trim().split("\n").map((p) => p.slice(2));
  const statList = shuffled(files.filter((_, i) => i % STAT_EVERY === 0));
  fs.rmSync(treeDir, { recursive: true });
  const layer = await estargzLayer(tarFile);
  const image = await pushLayers(reg, "bench/meta", "esgz", [layer]);
  fs.rmSync(tarFile);
  fs.rmSync(`${tarFile}.esgz`);
  console.log(
    `${runtimeVersion()}, ${os.cpus().length} cpus; one layer of ${ENTRIES} entries plus a ` +
      `${BIG_MB} MiB file, ${(layer.data.length / 1e6).toFixed(1)} MB eStargz; medians of ` +
      `${ROUNDS}; stat storm over ${statList.length} files`,
  );

  const ours = await side(
    "ours",
    (root, address, config) =>
      scriptCommand(path.join(REPO_ROOT, "src/main.ts"), [
        "serve",
        ...daemonFlags(address, root, config, "warn"),
      ]),
    image.ref,
    statList,
    bigSize,
  );
  const go = REF_BIN
    ? await side(
      "go",
      (root, address, config) => [REF_BIN, ...daemonFlags(address, root, config, "warn")],
      image.ref,
      statList,
      bigSize,
    )
    : undefined;
  if (go && go.lines !== ours.lines) {
    throw new Error(`find -ls listed ${ours.lines} entries through ours, ${go.lines} through Go`);
  }

  const fmt = (n: number) => n.toFixed(2);
  const rows: [string, number, number | undefined, string][] = [
    ["find -ls, first pass (s)", ours.findFirstS, go?.findFirstS, "cold: every name asked once"],
    [
      "find -ls, 2 s later (s)",
      ours.findAgainS,
      go?.findAgainS,
      `timeouts expired; daemon CPU ${fmt(ours.findAgainCpuS)} s` +
      (go ? ` vs ${fmt(go.findAgainCpuS)} s` : ""),
    ],
    [
      "stat storm (s)",
      ours.statS,
      go?.statS,
      `${statList.length} paths, a LOOKUP each; daemon CPU ${fmt(ours.statCpuS)} s` +
      (go ? ` vs ${fmt(go.statCpuS)} s` : ""),
    ],
    ["random 4 KiB reads/s (O_DIRECT, warm)", ours.rand4kIops, go?.rand4kIops, "xfs_io pread -R"],
    ["sequential MB/s (O_DIRECT, warm)", ours.seqMBps, go?.seqMBps, "dd bs=1M iflag=direct"],
    ["daemon RSS, layer walked (MiB)", ours.rssMiB, go?.rssMiB, "VmRSS"],
    ["daemon peak RSS (MiB)", ours.peakMiB, go?.peakMiB, "VmHWM"],
  ];
  printTable(
    ["measure", "ours", "Go reference", "ours ÷ Go", "notes"],
    rows.map(([m, o, g, n]) => [m, o, g ?? "", g ? o / g : "", n]),
  );
  printResult("meta", {
    find_first_s: ours.findFirstS,
    find_again_s: ours.findAgainS,
    stat_storm_s: ours.statS,
    rand4k_iops: ours.rand4kIops,
    seq_mbps: ours.seqMBps,
    rss_mib: ours.rssMiB,
    peak_mib: ours.peakMiB,
    ...(go
      ? {
        // Times: ours ÷ Go below 1 is faster; rates: above 1 is faster.
        meta_vs_go_ratio: ours.findAgainS / go.findAgainS,
        meta_first_vs_go_ratio: ours.findFirstS / go.findFirstS,
        stat_vs_go_ratio: ours.statS / go.statS,
        rand4k_vs_go_ratio: ours.rand4kIops / go.rand4kIops,
        seq_vs_go_ratio: ours.seqMBps / go.seqMBps,
        rss_vs_go_ratio: ours.rssMiB / go.rssMiB,
        peak_vs_go_ratio: ours.peakMiB / go.peakMiB,
      }
      : {}),
  });
} finally {
  await cleanup();
}
