/**
 * End-to-end harness: a real containerd 1.6 with private root/state/sockets that uses our daemon
 * as its `stargz` proxy snapshotter, our daemon started from source, and OCI image archives
 * built in memory (busybox-static plus generated files) for `ctr images import`.
 *
 * ```ts
 * const dir = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-e2e-"));
 * const sgz = await startStargz({ dir });
 * const ctd = await startContainerd({ dir, snapshotterAddress: sgz.address });
 * try {
 *   await ctd.ctr(["images", "import", "--snapshotter", "stargz", tarPath]);
 * } finally {
 *   await ctd.stop();
 *   await sgz.stop();
 *   await cleanupDir(dir);
 * }
 * ```
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs/promises";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { scriptCommand } from "../src/runtime/mod.ts";

const run = promisify(execFile);

/** Repository root (where src/main.ts lives). */
export const REPO_ROOT: string = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  "..",
);

/** Resolves once `predicate` holds, polling every 50 ms; rejects after `timeoutMs`. */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether something accepts connections on the unix socket at `socketPath`. */
export function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection(socketPath);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

/** Resolves with the exit code (null when killed by a signal) once `child` has exited. */
function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode);
  }
  return new Promise((r) => child.once("exit", (code) => r(code)));
}

/** Sends `sig` by pid: Deno's `child.kill` reports the signal as the exit cause even when the
 * child handled it and exited normally. */
function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, sig);
  } catch { /* already gone */ }
}

async function stopProcess(child: ChildProcess, graceMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const done = exited(child);
  signal(child, "SIGTERM");
  const timer = setTimeout(() => signal(child, "SIGKILL"), graceMs);
  const code = await done;
  clearTimeout(timer);
  return code;
}

/** Mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8");
  return text.split("\n").map((l) =>
    (l.split(" ")[4] ?? "").replace(
      /\\([0-7]{3})/g,
      (_m, o: string) => String.fromCharCode(parseInt(o, 8)),
    )
  ).filter((m) => m === dir || m.startsWith(dir + "/")).reverse();
}

/**
 * Unmounts everything below `dir` and removes it. A daemon stopped gracefully leaves its layers
 * mounted, held by its fd holder for the next daemon and served by nobody, so even umount's
 * stat of them would wait: their connections are aborted and the holders stopped first.
 */
export async function cleanupDir(dir: string): Promise<void> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8");
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const mp = f[4] ?? "";
    if (!(mp === dir || mp.startsWith(dir + "/")) || !line.includes(" - fuse")) continue;
    const minor = (f[2] ?? "").split(":")[1];
    await fs.writeFile(`/sys/fs/fuse/connections/${minor}/abort`, "1").catch(() => {});
  }
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const argv = (await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv.includes("fd-holder") && argv.some((a) => a.startsWith(dir + "/"))) {
      try {
        process.kill(Number(name), "SIGTERM");
      } catch { /* already gone */ }
    }
  }
  for (const m of await mountsUnder(dir)) {
    await run("umount", [m]).catch(() => run("umount", ["-l", m]).catch(() => {}));
  }
  await fs.rm(dir, { recursive: true, force: true });
}

/** Our daemon (`stargz serve`) running from source in a child process. */
export interface StargzProcess {
  readonly address: string;
  readonly root: string;
  readonly child: ChildProcess;
  /** Everything it logged so far (JSON lines). */
  logs(): string;
  /** SIGTERM and wait (SIGKILL after 10 s); returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait, as a crash. */
  kill(): Promise<void>;
}

/**
 * Starts `stargz serve` with root and socket under `dir` and waits for the socket. It runs from
 * source with the current runtime, or the compiled executable named by `STARGZ_TEST_BINARY`.
 */
export async function startStargz(
  opts: {
    dir: string;
    root?: string;
    address?: string;
    args?: string[];
    /** Another executable, or entry script (`.ts`), to run instead (an upgraded copy). */
    binary?: string;
  },
): Promise<StargzProcess> {
  const root = opts.root ?? path.join(opts.dir, "stargz-root");
  const address = opts.address ?? path.join(opts.dir, "stargz.sock");
  const binary = opts.binary ?? process.env.STARGZ_TEST_BINARY;
  const argv = (serveArgs: string[]): string[] =>
    binary && !binary.endsWith(".ts")
      ? [binary, ...serveArgs]
      : scriptCommand(binary ?? path.join(REPO_ROOT, "src/main.ts"), serveArgs);
  const [cmd, ...args] = argv([
    "serve",
    "--address",
    address,
    "--root",
    root,
    "--log-level",
    "debug",
    ...(opts.args ?? []),
  ]);
  const child = spawn(cmd!, args, { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let logs = "";
  child.stderr!.on("data", (d) => (logs += d));
  const proc: StargzProcess = {
    address,
    root,
    child,
    logs: () => logs,
    stop: () => stopProcess(child, 10_000),
    async kill() {
      const done = exited(child);
      signal(child, "SIGKILL");
      await done;
    },
  };
  try {
    await waitUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`stargz serve exited: ${logs}`);
        return await socketAnswers(address);
      },
      30_000,
      "stargz socket",
    );
  } catch (err) {
    await proc.kill();
    throw err;
  }
  return proc;
}

/** Output of a finished command. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A private containerd instance. */
export interface Containerd {
  /** containerd's gRPC socket. */
  readonly address: string;
  readonly dir: string;
  /** Runs `ctr --address … -n <namespace> args…` (namespace "test" by default). */
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<CommandResult>;
  /** Like {@link ctr} but throws on a non-zero exit, with stderr in the message. */
  ctrOk(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<string>;
  /**
   * Runs `command` in a throwaway container `id` of `ref` on the stargz snapshotter
   * (`ctr run --rm`; namespace "k8s.io", where CRI pulls land, unless told); its stdout.
   */
  runStargz(
    ref: string,
    id: string,
    command: string[],
    opts?: { namespace?: string; timeoutMs?: number },
  ): Promise<string>;
  /** The tail of containerd's log (for failure messages). */
  logs(): string;
  /**
   * Resolves once containerd reaches the proxy snapshotter `name` again: a probe snapshot can
   * be prepared and removed. After our daemon restarts, containerd's gRPC client reconnects
   * with backoff and fails calls fast ("unavailable") until then. (`ctr snapshots ls` is no
   * probe: containerd answers it from its own metadata without asking the snapshotter.)
   */
  snapshotterReady(name?: string): Promise<void>;
  /** Stops containerd and the shims it started; unmounts what it left mounted. */
  stop(): Promise<void>;
}

/** containerd's configuration: our socket as the `stargz` proxy snapshotter, CRI using it. */
export function containerdConfig(
  dir: string,
  snapshotterAddress: string,
  gc: "auto" | "on-demand" = "auto",
  cri = true,
): string {
  // The scheduler ignores deletions while its first (startup) run is pending, but a synchronous
  // request (`ctr images rm --sync`) still collects at once; defaults are 100ms and "0s".
  const startupDelay = gc === "auto" ? "100ms" : "24h";
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",${cri ? "" : `\n  "io.containerd.grpc.v1.cri",`}
]

[grpc]
  address = "${dir}/containerd.sock"

[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"

[debug]
  level = "debug"

[proxy_plugins]
  [proxy_plugins.stargz]
    type = "snapshot"
    address = "${snapshotterAddress}"

[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "${startupDelay}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.invalid/pause:3.6"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "stargz"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${dir}/cni/bin"
    conf_dir = "${dir}/cni/conf"
`;
}

async function pidsOfShims(containerdAddress: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
    const argv = cmdline.split("\0");
    if (argv[0]?.includes("containerd-shim") && argv.includes(containerdAddress)) {
      pids.push(Number(name));
    }
  }
  return pids;
}

/** Options of {@link startContainerd}. */
export interface ContainerdOptions {
  /** Directory for containerd's files (keep it short: socket paths are limited to 107 bytes). */
  dir: string;
  /** Our daemon's socket. */
  snapshotterAddress: string;
  /**
   * "auto" (default): containerd collects garbage soon after every deletion, which takes
   * unreferenced snapshots such as `ctr snapshots view`s with it. "on-demand": only when asked
   * synchronously (`ctr images rm --sync`); after that first run it is automatic again.
   */
  gc?: "auto" | "on-demand";
  /** Load the CRI plugin (default true); false is containerd as used without Kubernetes. */
  cri?: boolean;
}

/** Starts containerd with a private root/state/socket under `dir`. */
export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  const dir = path.join(opts.dir, "ctd");
  await fs.mkdir(path.join(dir, "cni/bin"), { recursive: true });
  await fs.mkdir(path.join(dir, "cni/conf"), { recursive: true });
  const configPath = path.join(dir, "config.toml");
  await fs.writeFile(
    configPath,
    containerdConfig(dir, opts.snapshotterAddress, opts.gc, opts.cri),
  );
  const address = path.join(dir, "containerd.sock");
  const child = spawn("containerd", ["--config", configPath], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let logs = "";
  child.stderr!.on("data", (d) => {
    logs += d;
    if (logs.length > 1 << 20) logs = logs.slice(-(1 << 19));
  });
  const ctr = async (
    args: string[],
    o: { namespace?: string; timeoutMs?: number } = {},
  ): Promise<CommandResult> => {
    const argv = ["--address", address, "-n", o.namespace ?? "test", ...args];
    try {
      const r = await run("ctr", argv, { timeout: o.timeoutMs ?? 60_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === "number" ? e.code : -1,
        stdout: e.stdout ?? "",
        stderr: e.stderr ?? String(err),
      };
    }
  };
  const ctrOk = async (
    args: string[],
    o?: { namespace?: string; timeoutMs?: number },
  ): Promise<string> => {
    const r = await ctr(args, o);
    if (r.code !== 0) {
      throw new Error(`ctr ${args.join(" ")} failed (${r.code}): ${r.stderr}${r.stdout}`);
    }
    return r.stdout;
  };
  const stop = async (): Promise<void> => {
    await stopProcess(child, 10_000);
    for (const pid of await pidsOfShims(address)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    for (const m of await mountsUnder(dir)) {
      await run("umount", ["-l", m]).catch(() => {});
    }
  };
  try {
    await waitUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`containerd exited: ${logs.slice(-4000)}`);
        return (await ctr(["version"], { timeoutMs: 5000 })).code === 0;
      },
      30_000,
      "containerd",
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    address,
    dir,
    ctr,
    logs: () => logs,
    async snapshotterReady(name = "stargz") {
      const probe = `ready-probe-${process.pid}-${Date.now()}`;
      await waitUntil(
        async () => {
          const r = await ctr(["snapshots", "--snapshotter", name, "prepare", probe], {
            timeoutMs: 10_000,
          });
          // An earlier attempt may have got through after ctr gave up on it.
          return r.code === 0 || /already exists/.test(r.stderr);
        },
        60_000,
        `containerd to reach snapshotter ${name}`,
      );
      await ctr(["snapshots", "--snapshotter", name, "rm", probe]);
    },
    ctrOk,
    runStargz: (ref, id, command, o) =>
      ctrOk(["run", "--rm", "--snapshotter", "stargz", ref, id, ...command], {
        namespace: "k8s.io",
        ...o,
      }),
    stop,
  };
}

/** One entry of a layer tar. */
export type TarEntry =
  | { type: "dir"; name: string; mode?: number }
  | { type: "file"; name: string; data: Uint8Array | string; mode?: number }
  | { type: "symlink"; name: string; target: string };

function tarHeader(name: string, size: number, mode: number, type: string, link = ""): Uint8Array {
  const h = new Uint8Array(512);
  const put = (off: number, len: number, s: string) => {
    const b = new TextEncoder().encode(s);
    if (b.length > len) throw new Error(`tar field too long: ${s}`);
    h.set(b, off);
  };
  const octal = (off: number, len: number, n: number) =>
    put(off, len, n.toString(8).padStart(len - 1, "0") + "\0");
  put(0, 100, name);
  octal(100, 8, mode);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 1_700_000_000);
  put(148, 8, "        ");
  put(156, 1, type);
  put(157, 100, link);
  put(257, 6, "ustar\0");
  put(263, 2, "00");
  let sum = 0;
  for (const b of h) sum += b;
  put(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** A ustar archive of `entries` (names relative, without a leading slash). */
export function tarArchive(entries: readonly TarEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    if (e.type === "dir") {
      parts.push(tarHeader(e.name.replace(/\/?$/, "/"), 0, e.mode ?? 0o755, "5"));
    } else if (e.type === "symlink") parts.push(tarHeader(e.name, 0, 0o777, "2", e.target));
    else {
      const data = typeof e.data === "string" ? new TextEncoder().encode(e.data) : e.data;
      parts.push(tarHeader(e.name, data.length, e.mode ?? 0o644, "0"), data);
      if (data.length % 512) parts.push(new Uint8Array(512 - (data.length % 512)));
    }
  }
  parts.push(new Uint8Array(1024));
  return Buffer.concat(parts);
}

function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** The GOARCH name of this machine. */
export function goArch(): string {
  return os.arch() === "x64" ? "amd64" : os.arch();
}

/** A layer of busybox-static: /bin/busybox and applet links for `sh`, `echo`, `cat`, `ls`. */
export async function busyboxLayer(): Promise<TarEntry[]> {
  const busybox = await fs.readFile("/bin/busybox");
  return [
    { type: "dir", name: "bin" },
    { type: "file", name: "bin/busybox", data: busybox, mode: 0o755 },
    ...["sh", "echo", "cat", "ls", "sleep", "true"].map((a): TarEntry => ({
      type: "symlink",
      name: `bin/${a}`,
      target: "busybox",
    })),
    { type: "dir", name: "etc" },
    { type: "dir", name: "proc" },
    { type: "dir", name: "dev" },
    { type: "dir", name: "sys" },
    { type: "dir", name: "tmp", mode: 0o1777 },
  ];
}

/** What {@link writeImageArchive} built. */
export interface BuiltImage {
  /** Path of the OCI archive for `ctr images import`. */
  path: string;
  /** Full image name (`docker.io/library/<name>:latest` style). */
  name: string;
  /** Compressed layer digests, base first. */
  layers: string[];
  /** Chain ids of the layers (containerd's committed snapshot names), base first. */
  chainIds: string[];
}

/** Writes an OCI image archive (gzip layers, config, manifest, index) to `file`. */
export async function writeImageArchive(
  file: string,
  name: string,
  layers: readonly (readonly TarEntry[])[],
  cmd: string[] = ["/bin/sh"],
): Promise<BuiltImage> {
  const blobs = new Map<string, Uint8Array>();
  const add = (data: Uint8Array): string => {
    const d = sha256(data);
    blobs.set(d, data);
    return d;
  };
  const diffIds: string[] = [];
  const layerDescs = layers.map((entries) => {
    const tar = tarArchive(entries);
    diffIds.push(sha256(tar));
    const gz = gzipSync(tar);
    return {
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: add(gz),
      size: gz.length,
    };
  });
  const config = new TextEncoder().encode(JSON.stringify({
    architecture: goArch(),
    os: "linux",
    config: { Cmd: cmd, Env: ["PATH=/bin"] },
    rootfs: { type: "layers", diff_ids: diffIds },
  }));
  const manifest = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: add(config),
      size: config.length,
    },
    layers: layerDescs,
  }));
  const manifestDigest = add(manifest);
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: manifestDigest,
      size: manifest.length,
      platform: { architecture: goArch(), os: "linux" },
      annotations: {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": "latest",
      },
    }],
  });
  const entries: TarEntry[] = [
    { type: "file", name: "oci-layout", data: JSON.stringify({ imageLayoutVersion: "1.0.0" }) },
    { type: "file", name: "index.json", data: index },
    { type: "dir", name: "blobs" },
    { type: "dir", name: "blobs/sha256" },
    ...[...blobs].map(([d, data]): TarEntry => ({
      type: "file",
      name: `blobs/sha256/${d.slice("sha256:".length)}`,
      data,
    })),
  ];
  await fs.writeFile(file, tarArchive(entries));
  const chainIds: string[] = [];
  for (const id of diffIds) {
    chainIds.push(chainIds.length === 0 ? id : sha256(`${chainIds[chainIds.length - 1]} ${id}`));
  }
  return { path: file, name, layers: layerDescs.map((l) => l.digest), chainIds };
}

/** One `remote-snapshot-prepared` decision a daemon logged. */
export interface PrepareDecision {
  prepared: string;
  reason?: string;
  digest?: string;
}

/**
 * A reader of the `remote-snapshot-prepared` decisions in `logs()`: each call returns those
 * logged since the previous call, in order.
 */
export function decisionReader(logs: () => string): () => PrepareDecision[] {
  const seen = new Set<string>();
  return () => {
    const out = [];
    for (const line of logs().split("\n")) {
      if (!line.includes("remote-snapshot-prepared") || seen.has(line)) continue;
      seen.add(line);
      const rec = JSON.parse(line);
      out.push({
        prepared: rec["remote-snapshot-prepared"],
        reason: rec.reason,
        digest: rec.digest ?? rec.layer,
      });
    }
    return out;
  };
}

/** The body of a GET of `p` from the admin API listening on the unix socket `socket`. */
export function adminText(socket: string, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: socket, path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}
