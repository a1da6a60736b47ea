/**
 * Registry range-read throughput: many concurrent 50 KB range reads and large (16 MiB) range
 * reads through `RemoteBlob`, against a local `docker-registry`, next to `curl` doing the same
 * requests (same ranges, same concurrency, keep-alive, `--parallel`) in the same run.
 *
 * `npm run bench -- registry [--rounds N]`
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { RegistryClient } from "../src/registry/mod.ts";
import { runtimeVersion } from "../src/runtime/mod.ts";
import { pushBlob, startRegistry, testBytes } from "../test/_registry.ts";
import { median, printResult, printTable } from "./_result.ts";

const BLOB_SIZE = 128 << 20;
const SMALL = 50_000;
const SMALL_COUNT = 2000;
const SMALL_CONCURRENCY = 32;
const LARGE = 16 << 20;
const LARGE_COUNT = 24;
const LARGE_CONCURRENCY = 4;
const roundsArg = process.argv.indexOf("--rounds");
const ROUNDS = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : 3;

type Range = [number, number];

function smallRanges(): Range[] {
  const out: Range[] = [];
  let x = 12345;
  for (let i = 0; i < SMALL_COUNT; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const start = x % (BLOB_SIZE - SMALL);
    out.push([start, start + SMALL]);
  }
  return out;
}

function largeRanges(): Range[] {
  const out: Range[] = [];
  for (let i = 0; i < LARGE_COUNT; i++) {
    const start = (i * LARGE) % (BLOB_SIZE - LARGE + 1);
    out.push([start, start + LARGE]);
  }
  return out;
}

async function pool<T>(items: T[], concurrency: number, fn: (t: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

/** Runs curl over `ranges` with `--parallel`; returns seconds and checks every answer was 206. */
async function curlRun(url: string, ranges: Range[], concurrency: number, dir: string) {
  const cfg = path.join(dir, "curl.cfg");
  const lines = [`parallel`, `parallel-max = ${concurrency}`];
  ranges.forEach(([s, e], i) => {
    if (i > 0) lines.push("next");
    lines.push(
      `url = "${url}"`,
      `output = "/dev/null"`,
      `header = "Range: bytes=${s}-${e - 1}"`,
      `write-out = "%{http_code} %{size_download}\\n"`,
    );
  });
  await fs.writeFile(cfg, lines.join("\n") + "\n");
  const t0 = performance.now();
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn("curl", ["-s", "-K", cfg], { stdio: ["ignore", "pipe", "ignore"] });
    let text = "";
    child.stdout.on("data", (d: Buffer) => (text += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => code === 0 ? resolve(text) : reject(new Error(`curl ${code}`)));
  });
  const secs = (performance.now() - t0) / 1000;
  const ok = out.trim().split("\n").filter((l) => l.startsWith("206 ")).length;
  if (ok !== ranges.length) throw new Error(`curl: ${ok} of ${ranges.length} answers were 206`);
  return secs;
}

const reg = await startRegistry();
const dir = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-bench-registry-"));
try {
  const data = testBytes(BLOB_SIZE, 3);
  const digest = await pushBlob(reg, "bench", data);
  const url = `${reg.url}/v2/bench/blobs/${digest}`;
  const client = new RegistryClient({ keychain: { get: () => Promise.resolve(undefined) } });
  const blob = await client.openBlob(`${reg.host}/bench`, digest);
  const small = smallRanges();
  const large = largeRanges();

  const ours = async (ranges: Range[], concurrency: number) => {
    const t0 = performance.now();
    await pool(ranges, concurrency, async ([s, e]) => {
      const got = await blob.read(s, e - s);
      if (got.length !== e - s || got[0] !== data[s] || got[got.length - 1] !== data[e - 1]) {
        throw new Error(`wrong bytes for ${s}-${e}`);
      }
    });
    return (performance.now() - t0) / 1000;
  };

  await ours(small.slice(0, 200), SMALL_CONCURRENCY); // warm up connections
  const r = {
    oursSmall: [] as number[],
    curlSmall: [] as number[],
    oursLarge: [] as number[],
    curlLarge: [] as number[],
  };
  for (let i = 0; i < ROUNDS; i++) {
    r.oursSmall.push(SMALL_COUNT / await ours(small, SMALL_CONCURRENCY));
    r.curlSmall.push(SMALL_COUNT / await curlRun(url, small, SMALL_CONCURRENCY, dir));
    const mib = (LARGE_COUNT * LARGE) / 1e6;
    r.oursLarge.push(mib / await ours(large, LARGE_CONCURRENCY));
    r.curlLarge.push(mib / await curlRun(url, large, LARGE_CONCURRENCY, dir));
  }
  const smallRps = median(r.oursSmall);
  const curlRps = median(r.curlSmall);
  const largeMbps = median(r.oursLarge);
  const curlMbps = median(r.curlLarge);
  console.log(
    `registry range reads, ${runtimeVersion()}, ${os.cpus().length} cpus, ${ROUNDS} rounds (median)`,
  );
  printTable(["workload", "stargz", "curl", "ratio"], [
    [
      `${SMALL_COUNT} x 50 KB, ${SMALL_CONCURRENCY} concurrent (req/s)`,
      smallRps,
      curlRps,
      smallRps / curlRps,
    ],
    [
      `${LARGE_COUNT} x 16 MiB, ${LARGE_CONCURRENCY} concurrent (MB/s)`,
      largeMbps,
      curlMbps,
      largeMbps / curlMbps,
    ],
  ]);
  printResult("registry", {
    small_rps: smallRps,
    small_ratio: smallRps / curlRps,
    large_mbps: largeMbps,
    large_ratio: largeMbps / curlMbps,
  });
} finally {
  await fs.rm(dir, { recursive: true, force: true });
  await reg.stop();
}
