/**
 * Builds the release set in `dist/`: the single-file executables `stargz-linux-amd64` and
 * `stargz-linux-arm64` (`bun build --compile`), each also gzip-compressed (`.gz`, what
 * install.sh downloads: about half the size, and every machine can unpack it), `install.sh`, and
 * `SHA256SUMS` over all of them. Prints each file's size and sha256. Run as `npx bun compile.ts`. The bundle contains every source, proto descriptor and asset:
 * the binaries read nothing from the source tree.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { gzipSync } from "node:zlib";

const TARGETS = [
  { file: "stargz-linux-amd64", target: "bun-linux-x64" },
  { file: "stargz-linux-arm64", target: "bun-linux-arm64" },
] as const;

const root = path.dirname(new URL(import.meta.url).pathname);
const dist = path.join(root, "dist");
const bun = path.join(root, "node_modules", ".bin", "bun");

function gitRevision(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { cwd: root }).toString()
      .trim();
  } catch {
    return "unknown";
  }
}

fs.mkdirSync(dist, { recursive: true });
const revision = gitRevision();
const sums: string[] = [];
function record(file: string): void {
  const data = fs.readFileSync(path.join(dist, file));
  const sum = createHash("sha256").update(data).digest("hex");
  sums.push(`${sum}  ${file}`);
  console.log(`${file}  ${(data.length / 1048576).toFixed(1)} MiB  sha256:${sum}`);
}
for (const t of TARGETS) {
  const out = path.join(dist, t.file);
  execFileSync(bun, [
    "build",
    "--compile",
    `--target=${t.target}`,
    "--minify-syntax",
    `--define=STARGZ_REVISION=${JSON.stringify(revision)}`,
    path.join(root, "src", "main.ts"),
    "--outfile",
    out,
  ], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  const data = fs.readFileSync(out);
  fs.writeFileSync(`${out}.gz`, gzipSync(data, { level: 9 }));
  record(t.file);
  record(`${t.file}.gz`);
}
fs.copyFileSync(path.join(root, "install.sh"), path.join(dist, "install.sh"));
record("install.sh");
fs.writeFileSync(path.join(dist, "SHA256SUMS"), sums.join("\n") + "\n");
console.log(`revision ${revision}; wrote dist/SHA256SUMS`);
