/**
 * Soak: containers of several lazily pulled images run for a bounded time while the benchmark
 * reads random ranges of random files through their root filesystems (`/proc/<pid>/root`, so
 * through each container's overlay and our FUSE layers) and background fetch fills the cache.
 * Every read is checked against the file's content. Every window it samples the daemon's RSS,
 * open fds, mounts under its root, the chunk cache and the read latency.
 *
 * Pass criteria (printed as `ok=1` when all hold): no failed or wrong read, RSS under
 * `--max-rss-mb`, cache disk under `[cache] max_size`, fds and mounts back to where they were
 * once the containers are gone, and the last window's p99 latency within 3x the first full
 * window's (background fetch moves reads from the registry to the cache, so it should fall).
 *
 * `npm run bench -- soak [--minutes N] [--containers N] [--images N] [--window-sec N]`
 */
import * as fs from "node:fs/promises";
import * as http from "node:http";
import { mountsUnder } from "../test/_containerd.ts";
import { startFleet } from "../test/_fleet.ts";
import type { FleetImage } from "../test/_fleet.ts";
import { testBytes } from "../test/_registry.ts";
import { printResult, printTable } from "./_result.ts";

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const MINUTES = flag("minutes", 10);
const CONTAINERS = flag("containers", 20);
const IMAGES = flag("images", 5);
const WINDOW_SEC = flag("window-sec", 60);
const MAX_RSS_MB = flag("max-rss-mb", 512);
const FILES = 16;
const FILE_SIZE = 1 << 20;
const CACHE_MAX = 48 << 20;
const READ_SIZE = 64 << 10;
/** Reads in flight at once across all containers. */
const PARALLEL = 4;

function adminGet(socket: string, p: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: socket, path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(JSON.parse(body)));
    }).on("error", reject);
  });
}

async function rssMb(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Open fds other than sockets (pooled registry connections come and go by design). */
async function fdCount(pid: number): Promise<number> {
  let n = 0;
  for (const fd of await fs.readdir(`/proc/${pid}/fd`)) {
    const target = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => "socket:");
    if (!target.startsWith("socket:")) n++;
  }
  return n;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

const fleet = await startFleet({
  images: IMAGES,
  filesPerImage: FILES,
  fileSize: FILE_SIZE,
  config: [`[cache]`, `max_size = ${CACHE_MAX}`, `memory_size = "16MiB"`],
});
const daemonPid = fleet.daemon.child.pid!;
const root = fleet.daemon.root;
try {
  // The expected bytes of every file, regenerated the way the fleet wrote them.
  const content = new Map<string, Uint8Array>();
  fleet.images.forEach((img, i) => {
    img.files.forEach((f, n) =>
      content.set(`${i}:${f.path}`, testBytes(f.size, i * 10_000 + n + 1))
    );
  });
  const fdsBefore = await fdCount(daemonPid);
  const mountsBefore = (await mountsUnder(root)).length;
  const which: FleetImage[] = Array.from(
    { length: CONTAINERS },
    (_, i) => fleet.images[i % IMAGES],
  );
  const t0 = Date.now();
  const names = await fleet.start(which, ["/bin/sleep", "1000000"]);
  const startSec = (Date.now() - t0) / 1000;
  const pids = await Promise.all(names.map((n) => fleet.pid(n)));
  console.log(`# ${CONTAINERS} containers of ${IMAGES} images started in ${startSec.toFixed(1)} s`);

  let reads = 0;
  let failed = 0;
  let wrong = 0;
  let latencies: number[] = [];
  const windows: (string | number)[][] = [];
  const p99s: number[] = [];
  let maxRss = 0;
  let maxCacheDisk = 0;
  const end = t0 + MINUTES * 60_000;
  let nextSample = Date.now() + WINDOW_SEC * 1000;

  const sample = async () => {
    const rss = await rssMb(daemonPid);
    const cache = await adminGet(fleet.adminSocket, "/v1/cache");
    const layers = await adminGet(fleet.adminSocket, "/v1/layers") as unknown as {
      state: { fetchedSize: number; size: number };
    }[];
    const fetched = layers.reduce((n, l) => n + l.state.fetchedSize, 0);
    const total = layers.reduce((n, l) => n + l.state.size, 0);
    maxRss = Math.max(maxRss, rss);
    maxCacheDisk = Math.max(maxCacheDisk, Number(cache.diskBytes));
    const p99 = percentile(latencies, 0.99);
    if (latencies.length > 0) p99s.push(p99);
    windows.push([
      Math.round((Date.now() - t0) / 1000),
      latencies.length,
      percentile(latencies, 0.5),
      p99,
      Math.round(rss),
      await fdCount(daemonPid),
      (await mountsUnder(root)).length,
      Number(cache.diskBytes) / (1 << 20),
      total === 0 ? 100 : (100 * fetched) / total,
    ]);
    latencies = [];
  };

  const reader = async () => {
    const buf = new Uint8Array(READ_SIZE);
    while (Date.now() < end) {
      const c = Math.floor(Math.random() * CONTAINERS);
      const img = fleet.images.indexOf(which[c]);
      const f = which[c].files[Math.floor(Math.random() * FILES)];
      const offset = Math.floor(Math.random() * (f.size - READ_SIZE));
      const started = performance.now();
      try {
        const fh = await fs.open(`/proc/${pids[c]}/root${f.path}`, "r");
        try {
          const { bytesRead } = await fh.read(buf, 0, READ_SIZE, offset);
          const want = content.get(`${img}:${f.path}`)!.subarray(offset, offset + READ_SIZE);
          if (bytesRead !== READ_SIZE || !Buffer.from(buf).equals(want)) wrong++;
        } finally {
          await fh.close();
        }
        latencies.push(performance.now() - started);
      } catch (err) {
        failed++;
        if (failed <= 5) console.error(`read failed: ${(err as Error).message}`);
      }
      reads++;
      if (Date.now() >= nextSample) {
        nextSample += WINDOW_SEC * 1000;
        await sample();
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, reader));
  await sample();
  await fleet.remove(names);
  // containerd unmounts the overlays as the tasks go; give the daemon's own fds a moment via
  // the condition, not a sleep: the count must come back to where it was.
  const settle = Date.now() + 30_000;
  let fdsAfter = await fdCount(daemonPid);
  let mountsAfter = (await mountsUnder(root)).length;
  while ((fdsAfter > fdsBefore || mountsAfter > mountsBefore) && Date.now() < settle) {
    await new Promise((r) => setTimeout(r, 200));
    fdsAfter = await fdCount(daemonPid);
    mountsAfter = (await mountsUnder(root)).length;
  }

  printTable(
    ["t_s", "reads", "p50_ms", "p99_ms", "rss_mb", "fds", "mounts", "cache_mb", "fetched_%"],
    windows,
  );
  const latencyStable = p99s.length < 2 || p99s[p99s.length - 1] <= 3 * p99s[0];
  const ok = failed === 0 && wrong === 0 && maxRss <= MAX_RSS_MB &&
    maxCacheDisk <= CACHE_MAX && fdsAfter <= fdsBefore && mountsAfter <= mountsBefore &&
    latencyStable;
  printResult("soak", {
    minutes: MINUTES,
    containers: CONTAINERS,
    images: IMAGES,
    start_s: startSec,
    reads,
    failed_reads: failed,
    wrong_reads: wrong,
    max_rss_mb: Math.round(maxRss),
    max_cache_mb: maxCacheDisk / (1 << 20),
    fd_leak: fdsAfter - fdsBefore,
    mount_leak: mountsAfter - mountsBefore,
    first_p99_ms: p99s[0] ?? 0,
    last_p99_ms: p99s[p99s.length - 1] ?? 0,
    ok: ok ? 1 : 0,
  });
  if (!ok) process.exitCode = 1;
} finally {
  await fleet.stop();
}
