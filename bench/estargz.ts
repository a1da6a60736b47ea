/**
 * eStargz benchmarks.
 *
 * 1. Conversion throughput of a realistic layer (regular files, dirs and symlinks from this
 *    machine's /usr, capped at STARGZ_BENCH_MB, default 100; use 500 for the size) next
 *    to `gzip -9` and `gzip -6` of the same tar in the same run.
 * 2. Opening a synthetic blob of 100k TOC entries: TOC decompress + parse + validate + index,
 *    time and memory.
 *
 * `npm run bench -- estargz [MB]`
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type BlobReader, convertLayer, openBlob, type TocEntry } from "../src/estargz/mod.ts";
import { tocOnlyBlob } from "../test/estargz_fixtures.ts";
import { median, printResult, printTable } from "./_result.ts";
import { sampleTree } from "./_rootfs.ts";

const sizeMb = Number(process.argv[2] ?? process.env.STARGZ_BENCH_MB ?? 100);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "estargz-bench-"));

function seconds(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}

function memReader(b: Uint8Array): BlobReader {
  return {
    size: b.length,
    read: (offset, length) => Promise.resolve(b.subarray(offset, offset + length)),
  };
}

/** A gzip eStargz blob whose TOC has `n` entries (dirs of 99 files, one chunk each). */
function syntheticBlob(n: number): Uint8Array {
  const entries: TocEntry[] = [];
  let offset = 100;
  const digest = "sha256:" + "ab".repeat(32);
  for (let d = 0; entries.length < n; d++) {
    entries.push({
      name: `usr/share/d${d}`,
      type: "dir",
      mode: 0o755,
      modtime: "2024-01-01T00:00:00Z",
    });
    for (let f = 0; f < 99 && entries.length < n; f++) {
      entries.push({
        name: `usr/share/d${d}/file-${f}.txt`,
        type: "reg",
        size: 1000 + f,
        modtime: "2024-01-01T00:00:00Z",
        mode: 0o644,
        uid: 0,
        gid: 0,
        offset,
        digest,
        chunkDigest: digest,
      });
      offset += 200;
    }
  }
  return tocOnlyBlob(entries, offset);
}

try {
  // 1. conversion
  const list =
    sampleTree(["/usr/lib", "/usr/bin", "/usr/share", "/usr/libexec"], sizeMb << 20).entries;
  const listFile = path.join(work, "files");
  fs.writeFileSync(listFile, list.map((p) => p.slice(1)).join("\n") + "\n");
  const tarFile = path.join(work, "layer.tar");
  execFileSync("tar", ["-cf", tarFile, "-C", "/", "--no-recursion", "-T", listFile], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  const tarBytes = fs.statSync(tarFile).size;
  const mb = tarBytes / 1e6;
  const gzipRun = (level: string) => {
    const out = path.join(work, `gzip${level}`);
    const s = seconds(() => {
      const r = spawnSync("sh", ["-c", `gzip -${level} -c ${tarFile} > ${out}`]);
      if (r.status !== 0) throw new Error(`gzip -${level} failed`);
    });
    return { s, size: fs.statSync(out).size };
  };
  const g9 = gzipRun("9");
  const g6 = gzipRun("6");
  const out = path.join(work, "layer.esgz");
  let t = performance.now();
  const conv = await convertLayer(tarFile, out, {});
  const convS = (performance.now() - t) / 1000;
  t = performance.now();
  const zconv = await convertLayer(tarFile, path.join(work, "layer.zst"), { format: "zstd" });
  const zS = (performance.now() - t) / 1000;
  t = performance.now();
  const conv1 = await convertLayer(tarFile, path.join(work, "layer1.esgz"), { workers: 0 });
  const conv1S = (performance.now() - t) / 1000;

  console.log(`layer: ${list.length} entries, ${mb.toFixed(1)} MB tar, ${os.cpus().length} cores`);
  printTable(["what", "seconds", "MB/s", "output MB", "vs gzip -9 size"], [
    ["gzip -9", g9.s, mb / g9.s, g9.size / 1e6, 1],
    ["gzip -6", g6.s, mb / g6.s, g6.size / 1e6, g6.size / g9.size],
    ["stargz convert (gzip 9, workers)", convS, mb / convS, conv.size / 1e6, conv.size / g9.size],
    [
      "stargz convert (gzip 9, inline)",
      conv1S,
      mb / conv1S,
      conv1.size / 1e6,
      conv1.size / g9.size,
    ],
    ["stargz convert --zstdchunked (3)", zS, mb / zS, zconv.size / 1e6, zconv.size / g9.size],
  ]);

  // 2. index of 100k entries
  const blob = syntheticBlob(100_000);
  const times: number[] = [];
  const rss: number[] = [];
  const gc = (globalThis as { gc?: () => void }).gc;
  const kept: unknown[] = [];
  for (let i = 0; i < 3; i++) {
    gc?.();
    const before = process.memoryUsage().rss;
    const s = performance.now();
    const eb = await openBlob(memReader(blob));
    times.push(performance.now() - s);
    if (!eb.entry("usr/share/d5/file-7.txt")) throw new Error("index broken");
    kept.push(eb);
    rss.push((process.memoryUsage().rss - before) / 1048576);
  }
  console.log();
  printTable(["100k-entry TOC", "median ms", "RSS growth MB (first open)"], [
    [`open+index (${(blob.length / 1e6).toFixed(1)} MB blob)`, median(times), rss[0]],
  ]);
  printResult("estargz", {
    convert_mbps: mb / convS,
    gzip9_mbps: mb / g9.s,
    gzip6_mbps: mb / g6.s,
    zstd_convert_mbps: mb / zS,
    convert_ratio: (mb / convS) / (mb / g9.s),
    size_ratio: conv.size / g9.size,
    index_100k_ms: median(times),
    index_100k_rss_mb: rss[0],
  });
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
