/**
 * `npm run bench -- <name> [args]` runs `bench/<name>.ts`. Each benchmark prints a table and ends
 * with one line `RESULT <name> key=value …` (ratios named `<what>_ratio`, ours ÷ baseline, both
 * measured in the same run).
 */
import * as fs from "node:fs";
import * as path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const name = process.argv[2];
const available = fs.readdirSync(here)
  .filter((f) => f.endsWith(".ts") && !f.startsWith("_") && f !== "run.ts")
  .map((f) => f.slice(0, -3));
if (!name || !available.includes(name)) {
  console.error(
    `usage: npm run bench -- <name> [args]\navailable: ${available.join(", ") || "(none)"}`,
  );
  process.exit(2);
}
process.argv.splice(2, 1);
await import(path.join(here, `${name}.ts`));
