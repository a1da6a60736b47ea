/**
 * The long fuzz run: `npm run fuzz -- --minutes N [--target NAME] [--seed S]` runs the targets
 * of test/_fuzz.ts round-robin with fresh seeds until the time is up (CI runs them once with a
 * fixed seed, test/fuzz.test.ts). A failure prints the target, seed and path that replay it
 * (`--target NAME --seed S --path P`) and exits 1; add the counterexample to the regressions
 * in test/fuzz.test.ts when fixing it. A run longer than RUN_TIMEOUT_MS counts as a hang; the
 * peak RSS is reported so that a bound that stopped holding shows.
 */
import fc from "fast-check";
import { cleanupFuzz, RUN_TIMEOUT_MS, TARGETS } from "../test/_fuzz.ts";

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const minutes = Number(flag("minutes") ?? 1);
const only = flag("target");
const fixedSeed = flag("seed");
const replayPath = flag("path");
const targets = TARGETS.filter((t) => !only || t.name === only);
if (!Number.isFinite(minutes) || minutes <= 0 || targets.length === 0) {
  console.error(
    `usage: npm run fuzz -- --minutes N [--target ${TARGETS.map((t) => t.name).join("|")}]` +
      " [--seed S [--path P]]",
  );
  process.exit(2);
}

const deadline = Date.now() + minutes * 60_000;
const runs = new Map<string, number>(targets.map((t) => [t.name, 0]));
let round = 0;
let peakRss = 0;
while (Date.now() < deadline) {
  for (const t of targets) {
    const seed = fixedSeed !== undefined ? Number(fixedSeed) : (Math.random() * 2 ** 31) | 0;
    // Ten times the CI share per round keeps each round short enough to respect the deadline.
    const numRuns = t.ciRuns * 10;
    const res = await fc.check(t.property(), {
      seed,
      numRuns,
      timeout: RUN_TIMEOUT_MS,
      ...(replayPath !== undefined ? { path: replayPath } : {}),
    });
    runs.set(t.name, runs.get(t.name)! + res.numRuns);
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    if (res.failed) {
      console.error(fc.defaultReportMessage(res));
      console.error(
        `replay: npm run fuzz -- --minutes 1 --target ${t.name} --seed ${res.seed}` +
          ` --path ${res.counterexamplePath}`,
      );
      console.log(`RESULT fuzz failed=${t.name} seed=${res.seed}`);
      await cleanupFuzz();
      process.exit(1);
    }
    if (Date.now() >= deadline || fixedSeed !== undefined) break;
  }
  round++;
  if (fixedSeed !== undefined) break;
}
await cleanupFuzz();
for (const [name, n] of runs) console.log(`${name.padEnd(14)} ${n} runs`);
const total = [...runs.values()].reduce((a, b) => a + b, 0);
console.log(
  `RESULT fuzz rounds=${round} runs=${total} failures=0 minutes=${minutes}` +
    ` peak_rss_mib=${Math.round(peakRss / 2 ** 20)}`,
);
