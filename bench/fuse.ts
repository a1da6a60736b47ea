/**
 * `npm run bench -- fuse`: our FUSE server against fuse-native (libfuse 2 bindings under Node)
 * serving the same synthetic tree, measured with the same tools in the same run:
 *  - sequential read of one file with `dd bs=1M` (its page cache dropped first), MB/s;
 *  - random 4 KiB O_DIRECT reads with `xfs_io pread -R` (one READ request each), reads/s;
 *  - `find -ls` over a cold tree, entries/s.
 * Sizes: FUSE_BENCH_SIZE (bytes, default 256 MiB; 1073741824 for the 1 GiB figure),
 * FUSE_BENCH_ENTRIES (default 20000; 100000 for the full figure), FUSE_BENCH_RUNS (default 3),
 * FUSE_BENCH_READERS (device readers where reads block a thread, i.e. Deno; default 1).
 */
import { execFile, spawn } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { type FuseSession, MemoryFileSystem, mount } from "../src/fuse/mod.ts";
import { runtimeVersion } from "../src/runtime/mod.ts";
import { median, printResult, printTable } from "./_result.ts";

const SIZE = Number(process.env.FUSE_BENCH_SIZE ?? 256 * 1024 * 1024);
const ENTRIES = Number(process.env.FUSE_BENCH_ENTRIES ?? 20_000);
const RUNS = Math.max(1, Number(process.env.FUSE_BENCH_RUNS ?? 3));
const RAND_SPAN = Math.min(SIZE, 32 * 1024 * 1024);
const here = path.dirname(new URL(import.meta.url).pathname);

/** The tree of `_fuse_native.cjs`, built as a MemoryFileSystem. */
function buildTree(): MemoryFileSystem {
  const block = new Uint8Array(1 << 20);
  for (let i = 0; i < block.length; i++) block[i] = (i * 7 + (i >> 8)) & 255;
  const fs = new MemoryFileSystem();
  fs.addFile("big", { size: SIZE, block });
  const data = new TextEncoder().encode("data\n");
  for (let r = 0; r < RUNS; r++) {
    const ndirs = Math.ceil(ENTRIES / 101);
    let made = 0;
    for (let k = 0; k < ndirs && made < ENTRIES; k++) {
      fs.addDir(`t${r}/d${k}`);
      made++;
      for (let j = 0; j < 100 && made < ENTRIES; j++, made++) fs.addFile(`t${r}/d${k}/f${j}`, data);
    }
  }
  return fs;
}

function sh(cmd: string): Promise<{ out: string; err: string }> {
  return new Promise((resolve, reject) => {
    execFile("sh", ["-c", cmd], { maxBuffer: 64 << 20 }, (e, out, err) => {
      if (e) reject(new Error(`${cmd}: ${err || e.message}`));
      else resolve({ out, err });
    });
  });
}

interface Figures {
  seqMBps: number[];
  randIops: number[];
  findOps: number[];
}

/** One run of each measurement against the mount at `mp` (run `r` walks tree `t<r>`). */
async function measure(mp: string, r: number, into: Figures): Promise<void> {
  const big = path.join(mp, "big");
  // Drop only this file's page cache (fadvise DONTNEED), not the machine's.
  await sh(`dd if=${big} iflag=nocache count=0 status=none`);
  const { err } = await sh(`dd if=${big} of=/dev/null bs=1M`);
  into.seqMBps.push(SIZE / 1e6 / Number(/copied, ([\d.]+) s/.exec(err)?.[1] ?? NaN));

  const x = await sh(`xfs_io -d -r -c "pread -R -Z ${r + 1} -b 4096 0 ${RAND_SPAN}" ${big}`);
  into.randIops.push(Number(/([\d.]+) ops\/sec/.exec(x.out)?.[1] ?? NaN));

  // Every run walks its own tree, so each one is cold (no cached dentries or listings).
  const t0 = performance.now();
  const { out } = await sh(`find ${path.join(mp, `t${r}`)} -ls | wc -l`);
  into.findOps.push(Number(out.trim()) / ((performance.now() - t0) / 1000));
}

async function isMounted(mp: string): Promise<boolean> {
  const info = await fsp.readFile("/proc/self/mountinfo", "utf8");
  return info.split("\n").some((l) => l.split(" ")[4] === mp);
}

async function nativeServer(mp: string): Promise<{ stop(): Promise<void> }> {
  const child = spawn(
    "node",
    [path.join(here, "_fuse_native.cjs"), mp, String(SIZE), String(ENTRIES), String(RUNS)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      if (out.includes("ready")) resolve();
    });
    child.on("close", (code) => reject(new Error(`fuse-native exited (${code}) before mounting`)));
  });
  return {
    async stop() {
      await sh(`umount ${mp} || umount -l ${mp}`).catch(() => {});
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      child.kill("SIGKILL");
      if (await isMounted(mp)) await sh(`umount -l ${mp}`).catch(() => {});
    },
  };
}

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "stargz-bench-fuse-"));
const oursMp = path.join(dir, "ours");
const nativeMp = path.join(dir, "native");
await fsp.mkdir(oursMp);
await fsp.mkdir(nativeMp);
console.log(
  `fuse benchmark: file ${SIZE} B, ${ENTRIES} entries per tree, ${RUNS} runs, ` +
    `random reads over ${RAND_SPAN} B; ours on ${runtimeVersion()}, fuse-native on node`,
);

let session: FuseSession | undefined;
let native: { stop(): Promise<void> } | undefined;
try {
  session = await mount(buildTree(), oursMp, {
    subtype: "stargzbench",
    outstandingReads: Number(process.env.FUSE_BENCH_READERS ?? 1),
  });
  native = await nativeServer(nativeMp);
  // Runs alternate between the two servers so that both see the same machine load.
  const ours: Figures = { seqMBps: [], randIops: [], findOps: [] };
  const base: Figures = { seqMBps: [], randIops: [], findOps: [] };
  for (let r = 0; r < RUNS; r++) {
    await measure(oursMp, r, ours);
    await measure(nativeMp, r, base);
  }
  const rows: [string, number, number][] = [
    ["sequential read, MB/s (dd bs=1M)", median(ours.seqMBps), median(base.seqMBps)],
    ["random 4 KiB reads/s (O_DIRECT)", median(ours.randIops), median(base.randIops)],
    ["find -ls, entries/s (cold)", median(ours.findOps), median(base.findOps)],
  ];
  printTable(
    ["metric", "ours", "fuse-native", "ratio"],
    rows.map(([name, a, b]) => [name, a, b, a / b]),
  );
  if (process.env.FUSE_BENCH_VERBOSE) console.log(JSON.stringify({ ours, base }));
  const [seq, rand, find] = rows;
  printResult("fuse", {
    seq_mbps: seq[1],
    seq_ratio: seq[1] / seq[2],
    rand4k_iops: rand[1],
    rand4k_ratio: rand[1] / rand[2],
    find_ops: find[1],
    find_ratio: find[1] / find[2],
  });
} finally {
  await session?.unmount();
  await native?.stop();
  await fsp.rm(dir, { recursive: true, force: true });
}
