/**
 * End to end with containerd: time from "pull" to the container's first output line for a
 * Debian bookworm rootfs with python3 (`debootstrap --variant=minbase --include=python3`, one
 * layer) running `python3 -c 'print(1)'`.
 *
 * - ours (lazy): the eStargz image (our converter), CRI `PullImage` through a containerd 1.6
 *   whose CRI snapshotter is our daemon, then `ctr run --snapshotter stargz`;
 * - ours with prefetch: the same, from an eStargz blob whose prioritized files are the files the
 *   command opens (traced with strace at build time), placed before `.prefetch.landmark`;
 * - overlayfs (full): the plain gzip image of the same tar, CRI `PullImage` through a containerd
 *   whose CRI snapshotter is `overlayfs`, then `ctr run --snapshotter overlayfs`;
 * - ours with a learned profile: the lazy image, on a fresh root that holds only the prefetch
 *   profile store recorded by one earlier run of the command;
 * - ours on `stargz optimize`: the lazy image rewritten from that profile (files before the
 *   landmark);
 * - with `STARGZ_REF_BIN` (upstream's daemon, `../shared/ref-go`) and its `ctr-remote` beside it
 *   (or `CTR_REMOTE`): the Go reference on the lazy image, and on the image
 *   `ctr-remote image optimize` makes of it by running the command.
 *
 * Every run is cold: a fresh containerd root and, for ours, a fresh daemon root (no content, no
 * snapshots, no chunk cache), started before the clock starts. Both run on loopback and through
 * a shaped link (`_link.ts`: veth + tbf for the rate, a delaying forwarder for the RTT).
 *
 * `[STARGZ_REF_BIN=/tmp/stargz-ref/containerd-stargz-grpc] npm run bench -- e2e [--runs N]
 * [--rate MBIT] [--rtt MS]`
 */
import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { setTimeout } from "node:timers";
import { promisify } from "node:util";
import { runtimeVersion } from "../src/runtime/mod.ts";
import {
  cleanupDir,
  containerdConfig,
  mountsUnder,
  startStargz,
  waitUntil,
} from "../test/_containerd.ts";
import { criPull } from "../test/_cri.ts";
import { estargzLayer, plainLayer, tarDir } from "../test/_images.ts";
import type { BuiltLayer } from "../test/_images.ts";
import { runCli } from "../test/_cli.ts";
import { pushImage, startRegistry } from "../test/_registry.ts";
import type { PushedImage, TestRegistry } from "../test/_registry.ts";
import { startShapedRegistry } from "./_link.ts";
import type { ShapedRegistry } from "./_link.ts";
import { median, printResult, printTable } from "./_result.ts";
import { daemonFlags } from "./_run.ts";

const run = promisify(execFile);

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const RUNS = flag("runs", 3);
const RATE_MBIT = flag("rate", 100);
const RTT_MS = flag("rtt", 20);
const SUITE = "bookworm";
const COMMAND = ["python3", "-c", "print(1)"];
/** Upstream's daemon and client, when built (`../shared/ref-go/build.sh`). */
const GO_BIN = process.env.STARGZ_REF_BIN;
const CTR_REMOTE = process.env.CTR_REMOTE ??
  (GO_BIN && path.join(path.dirname(GO_BIN), "ctr-remote"));
const WITH_GO = await Promise.all(
  [GO_BIN, CTR_REMOTE].map((f) => f ? fs.access(f).then(() => true, () => false) : false),
).then((ok) => ok.every(Boolean));
/** Built blobs are kept here between invocations (debootstrap and conversion take a minute). */
const CACHE = path.join(os.tmpdir(), `stargz-bench-e2e-${SUITE}-python3-v3`);
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * lazy: eStargz as `stargz convert` makes it by default (no landmark: every read on demand);
 * prefetch: eStargz with the files the command opens placed first, before `.prefetch.landmark`
 * (what upstream's `ctr-remote image optimize` makes), so the mount prefetches them in one go;
 * full: the plain gzip image, pulled and unpacked whole by containerd.
 */
type Mode = "lazy" | "prefetch" | "learned" | "optimized" | "go-lazy" | "go-opt" | "full";
/** `--modes a,b`: only these (the summary then names only what was measured). */
const ONLY = process.argv.includes("--modes")
  ? new Set(process.argv[process.argv.indexOf("--modes") + 1].split(","))
  : undefined;
const MODES: readonly Mode[] = ([
  ...(WITH_GO ? ["go-lazy", "go-opt"] as const : []),
  "lazy",
  "learned",
  "optimized",
  "prefetch",
  "full",
] as const).filter((m) => !ONLY || ONLY.has(m));
const MODE_LABEL: Record<Mode, string> = {
  lazy: "stargz (lazy, eStargz)",
  prefetch: "stargz (eStargz + prefetch landmark)",
  learned: "stargz (eStargz, learned profile)",
  optimized: "stargz (stargz optimize image)",
  "go-lazy": "Go reference (eStargz)",
  "go-opt": "Go reference (ctr-remote optimize image)",
  full: "overlayfs (full, gzip)",
};
/** Which daemon serves a mode. */
const DAEMON: Record<Mode, "ours" | "go" | "none"> = {
  lazy: "ours",
  prefetch: "ours",
  learned: "ours",
  optimized: "ours",
  "go-lazy": "go",
  "go-opt": "go",
  full: "none",
};
/** Which image (tag) a mode pulls. */
const IMAGE_OF: Record<Mode, string> = {
  lazy: "lazy",
  prefetch: "prefetch",
  learned: "lazy",
  optimized: "ours-opt",
  "go-lazy": "lazy",
  "go-opt": "go-opt",
  full: "full",
};

/**
 * Undo steps for everything the benchmark created, so that an interruption leaves no namespace,
 * veth, process, mount or directory behind. Steps are idempotent (they undo whatever exists when
 * called) and a step already running is awaited rather than started twice, because the signal
 * handler and the main flow's `finally` both run them.
 */
const undoSteps: (() => Promise<void>)[] = [];
let interrupted = false;

/** Registers `undo` for {@link cleanupAll}; returns the step for calling it earlier. */
function onCleanup(undo: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  const step = (): Promise<void> =>
    running ??= undo().catch((err) => console.error(`cleanup: ${err}`)).finally(() => {
      running = undefined;
    });
  undoSteps.push(step);
  return step;
}

/** Runs every undo step, newest first, including steps registered while it runs. */
async function cleanupAll(): Promise<void> {
  for (let done = -1; done !== undoSteps.length;) {
    done = undoSteps.length;
    for (const step of [...undoSteps].reverse()) await step();
  }
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    console.error(`${sig}: cleaning up`);
    interrupted = true;
    // The main flow then fails at its next step and runs the undo steps again for whatever it
    // started meanwhile; exit anyway if it does not finish soon.
    cleanupAll().finally(() => setTimeout(() => process.exit(130), 20_000).unref());
  });
}

function checkInterrupted(): void {
  if (interrupted) throw new Error("interrupted");
}

/** The Debian mirror this machine's apt uses (deb822 `URIs:` or a one-line `deb` entry). */
async function debianMirror(): Promise<string> {
  const files = ["/etc/apt/sources.list"];
  for (const f of await fs.readdir("/etc/apt/sources.list.d").catch(() => [])) {
    if (f.endsWith(".sources") || f.endsWith(".list")) files.push(`/etc/apt/sources.list.d/${f}`);
  }
  for (const f of files) {
    const text = await fs.readFile(f, "utf8").catch(() => "");
    for (const stanza of text.split(/\n\s*\n/)) {
      const uri = /^URIs:\s*(\S+)/m.exec(stanza)?.[1];
      if (uri && new RegExp(`^Suites:.*\\b${SUITE}\\b(?!-)`, "m").test(stanza)) return uri;
      const line = new RegExp(`^deb\\s+(?:\\[[^\\]]*\\]\\s+)?(\\S+)\\s+${SUITE}\\s`, "m")
        .exec(stanza)?.[1];
      if (line) return line;
    }
  }
  throw new Error(`no ${SUITE} mirror in this machine's apt sources`);
}

/** The images the benchmark builds from the rootfs (the others are derived in the run). */
type Built = "lazy" | "prefetch" | "full";
const BUILT: readonly Built[] = ["lazy", "prefetch", "full"];

/** What the image is made of. */
interface ImageBlobs {
  layers: Record<Built, BuiltLayer>;
  tarBytes: number;
  entries: number;
  /** Regular files the command opened, in order (the prioritized files of `prefetch`). */
  accessed: string[];
}

/**
 * Resolves `p` inside `root` as the chroot would (absolute links stay in the root): the entry
 * name of the file a path opened inside the container refers to.
 */
async function resolveInRoot(root: string, p: string): Promise<string | undefined> {
  let parts = p.split("/").filter((x) => x && x !== ".");
  const done: string[] = [];
  for (let links = 0; parts.length > 0;) {
    const part = parts.shift()!;
    if (part === "..") {
      done.pop();
      continue;
    }
    const here = path.join(root, ...done, part);
    const st = await fs.lstat(here).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (++links > 40) return undefined;
      const target = await fs.readlink(here);
      if (target.startsWith("/")) done.length = 0;
      parts = [...target.split("/").filter((x) => x && x !== "."), ...parts];
      continue;
    }
    done.push(part);
  }
  const st = await fs.stat(path.join(root, ...done)).catch(() => undefined);
  return st?.isFile() ? done.join("/") : undefined;
}

/** The ELF interpreter (`PT_INTERP`) of a 64-bit little-endian executable, if it has one. */
async function elfInterpreter(file: string): Promise<string | undefined> {
  const b = await fs.readFile(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return;
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  for (let i = 0; i < b.readUInt16LE(56); i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > b.length || b.readUInt32LE(ph) !== 3) continue;
    const off = Number(b.readBigUInt64LE(ph + 8));
    const size = Number(b.readBigUInt64LE(ph + 32));
    return b.subarray(off, off + size).toString("latin1").replace(/\0+$/, "");
  }
}

/**
 * The regular files `COMMAND` opens (strace of it in a chroot of the rootfs), in order, with the
 * dynamic loader of each executable (the kernel maps it without an `open` strace could see).
 */
async function traceAccessed(root: string, work: string): Promise<string[]> {
  const trace = path.join(work, "strace.out");
  await run("strace", [
    "-f",
    "-qq",
    "-e",
    "trace=chroot,execve,open,openat",
    "-o",
    trace,
    "chroot",
    root,
    ...COMMAND,
  ]);
  const files: string[] = [];
  let inRoot = false;
  for (const line of (await fs.readFile(trace, "utf8")).split("\n")) {
    if (/\bchroot\(.*\) = 0$/.test(line)) inRoot = true;
    const m = /\b(?:execve|open|openat)\((?:AT_FDCWD, )?"([^"]+)".*\) = \d+/.exec(line);
    if (!inRoot || !m || !m[1].startsWith("/")) continue;
    const name = await resolveInRoot(root, m[1]);
    if (!name || files.includes(name)) continue;
    files.push(name);
    const interp = line.includes("execve(")
      ? await elfInterpreter(path.join(root, name))
      : undefined;
    const loader = interp && await resolveInRoot(root, interp);
    if (loader && !files.includes(loader)) files.push(loader);
  }
  return files;
}

async function loadLayer(dir: string, name: string): Promise<BuiltLayer> {
  const meta = JSON.parse(await fs.readFile(path.join(dir, `${name}.json`), "utf8"));
  return { ...meta, data: new Uint8Array(await fs.readFile(path.join(dir, `${name}.blob`))) };
}

async function saveLayer(dir: string, name: string, layer: BuiltLayer): Promise<void> {
  const { data, ...meta } = layer;
  await fs.writeFile(path.join(dir, `${name}.blob`), data);
  await fs.writeFile(path.join(dir, `${name}.json`), JSON.stringify(meta));
}

/** debootstrap minbase + python3, one layer tar, converted to eStargz and to plain gzip. */
async function buildImage(): Promise<ImageBlobs> {
  const done = path.join(CACHE, "image.json");
  const cached = await fs.readFile(done, "utf8").catch(() => undefined);
  if (cached) {
    const info = JSON.parse(cached);
    console.log(`image: cached in ${CACHE}`);
    const layers = {} as Record<Built, BuiltLayer>;
    for (const b of BUILT) layers[b] = await loadLayer(CACHE, b);
    return { ...info, layers };
  }
  await fs.rm(CACHE, { recursive: true, force: true });
  await fs.mkdir(CACHE, { recursive: true });
  const work = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-bench-e2e-build-"));
  onCleanup(() => fs.rm(work, { recursive: true, force: true }));
  try {
    const missing: string[] = [];
    for (const tool of ["debootstrap", "strace"]) {
      if (!await run("which", [tool]).then(() => true, () => false)) missing.push(tool);
    }
    if (missing.length > 0) {
      console.log(`installing ${missing.join(", ")} (apt-get)`);
      await run("apt-get", ["install", "-y", "-q", ...missing], {
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
    }
    const mirror = await debianMirror();
    const root = path.join(work, "root");
    let t = performance.now();
    console.log(`image: debootstrap --variant=minbase --include=python3 ${SUITE} (${mirror})`);
    await run(
      "debootstrap",
      ["--variant=minbase", "--include=python3", SUITE, root, mirror],
      { maxBuffer: 64 << 20 },
    );
    // What a container image leaves out: device nodes (the runtime makes /dev) and apt's caches.
    for (const d of ["dev", "var/cache/apt", "var/lib/apt/lists"]) {
      for (const e of await fs.readdir(path.join(root, d))) {
        await fs.rm(path.join(root, d, e), { recursive: true, force: true });
      }
    }
    const { stdout: version } = await run("chroot", [root, "python3", "--version"]);
    console.log(`image: ${version.trim()} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const accessed = await traceAccessed(root, work);
    console.log(`image: ${COMMAND.join(" ")} opens ${accessed.length} regular files`);
    const tar = path.join(work, "rootfs.tar");
    tarDir(root, tar);
    const { stdout: list } = await run("tar", ["-tf", tar], { maxBuffer: 256 << 20 });
    const entries = list.trim().split("\n").length;
    const tarBytes = (await fs.stat(tar)).size;
    t = performance.now();
    const lazy = await estargzLayer(tar);
    const tConvert = (performance.now() - t) / 1000;
    console.log(`image: converted to eStargz in ${tConvert.toFixed(1)} s`);
    await saveLayer(CACHE, "lazy", lazy);
    const prefetch = await estargzLayer(tar, { prioritizedFiles: accessed, tmpDir: work });
    await saveLayer(CACHE, "prefetch", prefetch);
    const full = plainLayer(tar);
    await saveLayer(CACHE, "full", full);
    await fs.writeFile(done, JSON.stringify({ tarBytes, entries, accessed }));
    return { layers: { lazy, prefetch, full }, tarBytes, entries, accessed };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

function pushPython(reg: TestRegistry, tag: string, layer: BuiltLayer): Promise<PushedImage> {
  return pushImage(reg, "bench/python", tag, {
    layers: [{ data: layer.data, mediaType: layer.mediaType, annotations: layer.annotations }],
    config: {
      architecture: "amd64",
      os: "linux",
      config: { Env: [PATH_ENV], Cmd: ["python3"], WorkingDir: "/" },
      rootfs: { type: "layers", diff_ids: [layer.diffID] },
    },
  });
}

/** A private containerd whose CRI pulls with `snapshotter`. */
interface Ctd {
  readonly address: string;
  ctr(args: string[], timeoutMs?: number): Promise<string>;
  logs(): string;
  stop(): Promise<void>;
}

async function shimPids(address: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const argv = (await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv[0]?.includes("containerd-shim") && argv.includes(address)) pids.push(Number(name));
  }
  return pids;
}

/**
 * The test suites' containerd configuration; for the baseline the CRI snapshotter is overlayfs
 * and the proxy plugin is left out, so the two set-ups differ in nothing else.
 */
async function startCtd(dir: string, mode: Mode, stargzSocket?: string): Promise<Ctd> {
  const ctdDir = path.join(dir, "ctd");
  await fs.mkdir(path.join(ctdDir, "cni/bin"), { recursive: true });
  await fs.mkdir(path.join(ctdDir, "cni/conf"), { recursive: true });
  let config = containerdConfig(ctdDir, stargzSocket ?? "");
  if (mode === "full") {
    const before = config;
    config = config.replace(/\[proxy_plugins\]\n(?: {2}.*\n)+/, "")
      .replace('snapshotter = "stargz"', 'snapshotter = "overlayfs"');
    if (config === before || config.includes("stargz")) {
      throw new Error("could not derive the overlayfs configuration");
    }
  }
  const configPath = path.join(ctdDir, "config.toml");
  await fs.writeFile(configPath, config);
  const address = path.join(ctdDir, "containerd.sock");
  const child = spawn("containerd", ["--config", configPath], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr!.on("data", (d) => (log = (log + d).slice(-(1 << 18))));
  const ctr = async (args: string[], timeoutMs = 60_000): Promise<string> => {
    const r = await run("ctr", ["--address", address, "-n", "k8s.io", ...args], {
      timeout: timeoutMs,
    });
    return r.stdout;
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    for (const pid of await shimPids(address)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    for (const m of await mountsUnder(ctdDir)) await run("umount", ["-l", m]).catch(() => {});
  };
  try {
    await waitUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`containerd exited: ${log.slice(-3000)}`);
        return await ctr(["version"], 5000).then(() => true, () => false);
      },
      30_000,
      "containerd",
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, ctr, logs: () => log, stop };
}

/** `ctr run --rm` of the command; resolves when its first stdout line arrives, and at exit. */
function ctrRun(ctd: Ctd, mode: Mode, ref: string): {
  firstLine: Promise<{ at: number; line: string }>;
  exited: Promise<void>;
} {
  const snapshotter = mode === "full" ? "overlayfs" : "stargz";
  const id = `e2e-${randomUUID().slice(0, 8)}`;
  const child = spawn("ctr", [
    "--address",
    ctd.address,
    "-n",
    "k8s.io",
    "run",
    "--rm",
    "--snapshotter",
    snapshotter,
    ref,
    id,
    ...COMMAND,
  ], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  let resolveFirst!: (v: { at: number; line: string }) => void;
  let rejectFirst!: (e: Error) => void;
  const firstLine = new Promise<{ at: number; line: string }>((res, rej) => {
    resolveFirst = res;
    rejectFirst = rej;
  });
  child.stdout!.on("data", (d: Buffer) => {
    const at = performance.now();
    const had = out.includes("\n");
    out += d.toString();
    if (!had && out.includes("\n")) resolveFirst({ at, line: out.slice(0, out.indexOf("\n")) });
  });
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
  const exited = new Promise<void>((resolve, reject) => {
    child.on("close", (code) => {
      clearTimeout(timer);
      const e = new Error(`ctr run exited ${code}: ${err}${out}`);
      rejectFirst(e);
      if (code === 0) resolve();
      else reject(e);
    });
  });
  return { firstLine, exited };
}

/** One cold run. */
interface Sample {
  pullS: number;
  firstLineS: number;
  /** Compressed bytes the daemon had fetched when the line arrived (its state files). */
  fetchedMB?: number;
  /** Blob requests through the shaped link during the pull (one layer: per mount). */
  requests?: number;
}

/** A snapshotter daemon of either kind, as a cold run uses it. */
interface Daemon {
  readonly address: string;
  readonly root: string;
  logs(): string;
  stop(): Promise<unknown>;
}

/** Upstream's daemon with its default configuration (an empty file), root and socket in `dir`. */
async function startGo(dir: string): Promise<Daemon> {
  const address = path.join(dir, "go.sock");
  const root = path.join(dir, "go-root");
  const config = path.join(dir, "go.toml");
  await fs.writeFile(config, "");
  // Upstream logs its remote-snapshot-prepared decisions at debug level.
  const child = spawn(GO_BIN!, daemonFlags(address, root, config, "debug"), {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr!.on("data", (d) => (log = (log + d).slice(-(1 << 20))));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    // SIGINT: upstream unmounts its layers (SIGTERM leaves them for a restore).
    child.kill("SIGINT");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`Go daemon exited: ${log.slice(-2000)}`);
        return await fs.stat(address).then(() => true, () => false);
      },
      30_000,
      "Go daemon socket",
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, root, logs: () => log, stop };
}

/** Sum of `fetchedSize` in the state files of the layer's FUSE mounts under `root`. */
async function fetchedBytes(root: string, digest: string): Promise<number> {
  let total = 0;
  for (const m of await mountsUnder(root)) {
    const text = await fs.readFile(path.join(m, ".stargz-snapshotter", `${digest}.json`), "utf8")
      .catch(() => undefined);
    if (text) total += Number(JSON.parse(text).fetchedSize ?? 0);
  }
  return total;
}

/** What a cold run pulls: a reference and its (single) layer. */
interface BenchImage {
  ref: string;
  layers: readonly { digest: string }[];
}

/** Profile store files of our daemon's root (`[prefetch_profile]`). */
const isProfileFile = (f: string) => f.startsWith("prefetch_profiles.db");

async function coldRun(
  mode: Mode,
  image: BenchImage,
  opts: {
    link?: ShapedRegistry;
    /** Copy the profile store from here into the fresh root before the daemon starts. */
    seedProfiles?: string;
    /** Copy the profile store to here once the daemon has stopped. */
    harvestProfiles?: string;
  } = {},
): Promise<Sample> {
  // Short: containerd's socket paths live below it (unix socket paths are limited to 107 bytes).
  const dir = await fs.mkdtemp("/tmp/sgze2e-");
  let daemon: Daemon | undefined;
  let ctd: Ctd | undefined;
  const cleanup = onCleanup(async () => {
    await ctd?.stop();
    await daemon?.stop();
    if (opts.harvestProfiles && daemon) {
      // Undo steps run again at exit, when the root is gone: nothing to copy then.
      for (const f of await fs.readdir(daemon.root).catch(() => [])) {
        if (isProfileFile(f)) {
          await fs.copyFile(path.join(daemon.root, f), path.join(opts.harvestProfiles, f));
        }
      }
    }
    await cleanupDir(dir);
  });
  try {
    const kind = DAEMON[mode];
    if (kind === "ours") {
      const config = path.join(dir, "config.toml");
      await fs.writeFile(config, `[admin]\naddress = "${path.join(dir, "admin.sock")}"\n`);
      const root = path.join(dir, "stargz-root");
      if (opts.seedProfiles) {
        await fs.mkdir(root, { recursive: true });
        for (const f of await fs.readdir(opts.seedProfiles)) {
          if (isProfileFile(f)) {
            await fs.copyFile(path.join(opts.seedProfiles, f), path.join(root, f));
          }
        }
      }
      daemon = await startStargz({ dir, root, args: ["--config", config] });
    } else if (kind === "go") {
      daemon = await startGo(dir);
    }
    checkInterrupted();
    ctd = await startCtd(dir, mode, daemon?.address);
    checkInterrupted();

    const requests0 = opts.link?.blobRequests;
    const t0 = performance.now();
    await criPull(ctd.address, image.ref);
    const tPull = performance.now();
    const requests = requests0 === undefined ? undefined : opts.link!.blobRequests - requests0;
    const { firstLine, exited } = ctrRun(ctd, mode, image.ref);
    const first = await firstLine;
    const layer = image.layers[0].digest;
    const fetched = daemon ? await fetchedBytes(daemon.root, layer) : undefined;
    await exited;
    if (first.line !== "1") throw new Error(`unexpected first line ${JSON.stringify(first.line)}`);

    // The comparison only means something if the layer really was lazy and full really was full.
    const content = await ctd.ctr(["content", "ls", "-q"]);
    if (daemon) {
      const decisions = daemon.logs().split("\n").filter((l) =>
        l.includes("remote-snapshot-prepared")
      ).map((l) => JSON.parse(l)["remote-snapshot-prepared"]);
      if (decisions.length === 0 || decisions.some((d) => String(d) !== "true")) {
        throw new Error(`${mode}: layer not mounted lazily: ${JSON.stringify(decisions)}`);
      }
      if (content.includes(layer)) throw new Error(`${mode}: containerd downloaded the layer`);
    } else if (!content.includes(layer)) {
      throw new Error("containerd does not hold the plain layer after a full pull");
    }
    return {
      pullS: (tPull - t0) / 1000,
      firstLineS: (first.at - t0) / 1000,
      fetchedMB: fetched === undefined ? undefined : fetched / 1e6,
      requests,
    };
  } finally {
    await cleanup();
  }
}

/**
 * `ctr-remote image optimize` of the plain image (it runs the command in a container of a
 * containerd of our own and converts with the files it read first), pushed and read back.
 * Cached beside the built image.
 */
async function goOptimized(reg: TestRegistry, full: PushedImage): Promise<BuiltLayer> {
  const cached = await loadLayer(CACHE, "go-opt").catch(() => undefined);
  if (cached) return cached;
  const dir = await fs.mkdtemp("/tmp/sgzopt-");
  let ctd: Ctd | undefined;
  const cleanup = onCleanup(async () => {
    await ctd?.stop();
    await cleanupDir(dir);
  });
  try {
    ctd = await startCtd(dir, "full");
    const cr = (args: string[]) =>
      run(CTR_REMOTE!, ["--address", ctd!.address, "-n", "k8s.io", ...args], {
        maxBuffer: 64 << 20,
        timeout: 600_000,
      });
    const dst = `${reg.host}/bench/python:go-opt`;
    const t = performance.now();
    await cr(["images", "pull", "--plain-http", full.ref]);
    await cr([
      "images",
      "optimize",
      "--oci",
      "--period",
      "5",
      "--args",
      JSON.stringify(COMMAND),
      full.ref,
      dst,
    ]);
    await cr(["images", "push", "--plain-http", dst]);
    console.log(
      `image: ctr-remote image optimize in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
    const manifest = await (await fetch(`${reg.url}/v2/bench/python/manifests/go-opt`, {
      headers: accept,
    })).json() as {
      config: { digest: string };
      layers: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
    };
    const config = await (await fetch(
      `${reg.url}/v2/bench/python/blobs/${manifest.config.digest}`,
    )).json() as { rootfs: { diff_ids: string[] } };
    if (manifest.layers.length !== 1) throw new Error("ctr-remote optimize: not one layer");
    const l = manifest.layers[0];
    const layer = {
      data: new Uint8Array(
        await (await fetch(`${reg.url}/v2/bench/python/blobs/${l.digest}`)).arrayBuffer(),
      ),
      mediaType: l.mediaType,
      annotations: l.annotations,
      diffID: config.rootfs.diff_ids[0],
    } as BuiltLayer;
    await saveLayer(CACHE, "go-opt", layer);
    return layer;
  } finally {
    await cleanup();
  }
}

/** curl's view of a URL fetched twice on one connection: connect, first bytes, body MB/s. */
async function curlTiming(url: string, range?: string) {
  const { stdout } = await run("curl", [
    "-s",
    "-w",
    "%{http_code} %{time_connect} %{time_pretransfer} %{time_starttransfer} %{size_download} %{time_total}\\n",
    ...(range ? ["-r", range] : []),
    "-o",
    "/dev/null",
    url,
    "-o",
    "/dev/null",
    url,
  ]);
  const [first, second] = stdout.trim().split("\n").map((l) => l.split(" ").map(Number));
  for (const [code] of [first, second]) {
    if (code !== 200 && code !== 206) throw new Error(`curl ${url}: HTTP ${code}`);
  }
  const [, connect, , ttfb, size, total] = first;
  const [, , pretransfer2, ttfb2] = second;
  return {
    connectMs: connect * 1000,
    ttfbMs: ttfb * 1000,
    reusedTtfbMs: (ttfb2 - pretransfer2) * 1000,
    mbps: size / 1e6 / (total - ttfb),
  };
}

const image = await buildImage();
const reg = await startRegistry();
onCleanup(() => reg.stop());
let link: ShapedRegistry | undefined;
try {
  const images = {} as Record<string, BenchImage>;
  const pushed = {} as Record<Built, PushedImage>;
  for (const b of BUILT) images[b] = pushed[b] = await pushPython(reg, b, image.layers[b]);
  if (WITH_GO) {
    try {
      images["go-opt"] = await pushPython(reg, "go-opt", await goOptimized(reg, pushed.full));
    } catch (err) {
      throw new Error(`ctr-remote image optimize failed: ${err}`);
    }
  }
  link = await startShapedRegistry({
    storage: path.join(reg.dir, "storage"),
    rateMbit: RATE_MBIT,
    rttMs: RTT_MS,
    registerCleanup: (stop) => onCleanup(stop),
  });

  // The learned profile: one run of the command records it; every "learned" run starts from a
  // fresh root holding only that store, and `stargz optimize` turns it into an image.
  const profiles = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-bench-e2e-profile-"));
  onCleanup(() => fs.rm(profiles, { recursive: true, force: true }));
  await coldRun("lazy", images.lazy, { harvestProfiles: profiles });
  const optimizedRef = `${reg.host}/bench/python:ours-opt`;
  const opt = await runCli(["optimize", "--profile", profiles, images.lazy.ref, optimizedRef]);
  if (opt.code !== 0) throw new Error(`stargz optimize failed: ${opt.stderr}`);
  const optimized = JSON.parse(opt.stdout) as { digest: string };
  const optManifest = await (await fetch(
    `${reg.url}/v2/bench/python/manifests/${optimized.digest}`,
    { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } },
  )).json() as { layers: { digest: string }[] };
  images["ours-opt"] = { ref: optimizedRef, layers: optManifest.layers };

  console.log(
    `e2e: containerd ${
      (await run("containerd", ["--version"])).stdout.split(" ")[2]
    }, ${runtimeVersion()}, ${os.cpus().length} cpus, ${RUNS} cold runs each (median)${
      WITH_GO ? `, Go reference ${GO_BIN}` : " (no STARGZ_REF_BIN: no Go reference column)"
    }`,
  );
  console.log(
    `image: debootstrap ${SUITE} minbase + python3, 1 layer: tar ${
      (image.tarBytes / 1e6).toFixed(1)
    } MB, ${image.entries} entries; eStargz ${
      (image.layers.lazy.data.length / 1e6).toFixed(1)
    } MB (with landmark ${(image.layers.prefetch.data.length / 1e6).toFixed(1)} MB), gzip ${
      (image.layers.full.data.length / 1e6).toFixed(1)
    } MB; command: ${COMMAND.join(" ")} (opens ${image.accessed.length} regular files)`,
  );
  console.log(`shaped link: ${link.description}`);
  const blobPath = `/v2/bench/python/blobs/${pushed.full.layers[0].digest}`;
  const linkRows = [];
  for (
    const [name, base] of [
      ["loopback registry", reg.url],
      ["veth, rate only (no forwarder)", link.directUrl],
      ["shaped (forwarder + veth)", `http://${link.host}`],
    ] as const
  ) {
    const small = await curlTiming(`${base}/v2/`);
    const big = await curlTiming(`${base}${blobPath}`, `0-${(16 << 20) - 1}`);
    linkRows.push([name, small.connectMs, small.ttfbMs, small.reusedTtfbMs, big.mbps]);
  }
  printTable([
    "link check (curl)",
    "connect ms",
    "GET /v2/ first byte ms (new conn)",
    "(kept-alive conn)",
    "16 MiB range MB/s",
  ], linkRows);
  console.log();

  const on = (img: BenchImage, host: string): BenchImage => ({
    ...img,
    ref: img.ref.replace(reg.host, host),
  });
  const results: Record<string, Record<Mode, Sample[]>> = {};
  for (const [name, host] of [["loopback", reg.host], ["shaped", link.host]] as const) {
    results[name] = Object.fromEntries(MODES.map((m) => [m, []])) as unknown as Record<
      Mode,
      Sample[]
    >;
    for (let i = 0; i < RUNS; i++) {
      for (const mode of MODES) {
        checkInterrupted();
        const s = await coldRun(mode, on(images[IMAGE_OF[mode]], host), {
          link: name === "shaped" ? link : undefined,
          seedProfiles: mode === "learned" ? profiles : undefined,
        });
        results[name][mode].push(s);
        console.log(
          `${name} run ${i + 1} ${mode}: pull ${s.pullS.toFixed(3)} s, first line ${
            s.firstLineS.toFixed(3)
          } s${s.fetchedMB === undefined ? "" : `, fetched ${s.fetchedMB.toFixed(1)} MB`}${
            s.requests === undefined ? "" : `, ${s.requests} blob requests in the pull`
          }`,
        );
      }
    }
  }
  console.log();
  const rows = [];
  const summary: Record<string, number> = {};
  for (const [name, r] of Object.entries(results)) {
    const first = (mode: Mode) => median((r[mode] ?? []).map((s) => s.firstLineS));
    const full = first("full");
    for (const mode of MODES) {
      const samples = r[mode];
      const lazy = DAEMON[mode] !== "none";
      rows.push([
        name,
        MODE_LABEL[mode],
        median(samples.map((s) => s.pullS)),
        first(mode),
        samples.map((s) => s.firstLineS.toFixed(2)).join(" / "),
        lazy ? median(samples.map((s) => s.fetchedMB ?? 0)) : "-",
        lazy && samples[0].requests !== undefined
          ? median(samples.map((s) => s.requests ?? 0))
          : "-",
        mode === "full" ? "" : first(mode) / full,
        WITH_GO && lazy ? first(mode) / first("go-lazy") : "",
      ]);
    }
    summary[`${name}_lazy_s`] = first("lazy");
    summary[`${name}_full_s`] = full;
    summary[`${name}_ratio`] = first("lazy") / full;
  }
  // The earlier keys first, then the prefetch variants, then the Go reference's.
  for (const name of Object.keys(results)) {
    const first = (mode: Mode) => median((results[name][mode] ?? []).map((s) => s.firstLineS));
    summary[`${name}_prefetch_s`] = first("prefetch");
    summary[`${name}_prefetch_ratio`] = first("prefetch") / summary[`${name}_full_s`];
    summary[`${name}_learned_s`] = first("learned");
    summary[`${name}_optimized_s`] = first("optimized");
  }
  const shapedReq = (mode: Mode) =>
    median((results.shaped[mode] ?? []).map((s) => s.requests ?? 0));
  summary.shaped_requests_per_mount = shapedReq("lazy");
  if (WITH_GO) {
    for (const name of Object.keys(results)) {
      const first = (mode: Mode) => median((results[name][mode] ?? []).map((s) => s.firstLineS));
      summary[`${name}_go_s`] = first("go-lazy");
      summary[`${name}_go_opt_s`] = first("go-opt");
      summary[`${name}_vs_go_ratio`] = first("lazy") / first("go-lazy");
      summary[`${name}_learned_vs_go_ratio`] = first("learned") / first("go-lazy");
      summary[`${name}_learned_vs_go_opt_ratio`] = first("learned") / first("go-opt");
      summary[`${name}_optimized_vs_go_opt_ratio`] = first("optimized") / first("go-opt");
    }
    const mb = (mode: Mode) => median((results.shaped[mode] ?? []).map((s) => s.fetchedMB ?? 0));
    summary.bytes_vs_go_ratio = mb("lazy") / mb("go-lazy");
    summary.shaped_go_requests_per_mount = shapedReq("go-lazy");
  }
  printTable([
    "link",
    "snapshotter",
    "pull s",
    "first line s",
    "runs (s)",
    "fetched MB at first line",
    "blob requests in pull",
    "vs full",
    "vs Go",
  ], rows);
  // A run limited by --modes leaves out the keys of what it did not measure.
  printResult(
    "e2e",
    Object.fromEntries(Object.entries(summary).filter(([, v]) => Number.isFinite(v))),
  );
} finally {
  await cleanupAll();
}
