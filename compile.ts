/**
 * Builds the single-file executables `dist/stargz-linux-amd64` and `dist/stargz-linux-arm64`
 * with `bun build --compile`, prints each file's size and sha256, and writes `dist/SHA256SUMS`.
 * Run as `npx bun compile.ts`. The bundle contains every source, proto descriptor and asset:
 * the binaries read nothing from the source tree.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

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
  const sum = createHash("sha256").update(data).digest("hex");
  sums.push(`${sum}  ${t.file}`);
  console.log(`${t.file}  ${(data.length / 1048576).toFixed(1)} MiB  sha256:${sum}`);
}
fs.writeFileSync(path.join(dist, "SHA256SUMS"), sums.join("\n") + "\n");
console.log(`revision ${revision}; wrote dist/SHA256SUMS`);
