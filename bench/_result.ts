/** Helpers every benchmark uses to print its table and its closing RESULT line. */

/** Prints rows as an aligned text table with a header. */
export function printTable(
  header: readonly string[],
  rows: readonly (readonly (string | number)[])[],
): void {
  const cells = [header, ...rows].map((r) => r.map((c) => typeof c === "number" ? fmt(c) : c));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]?.length ?? 0)));
  for (const [n, r] of cells.entries()) {
    console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
    if (n === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(Math.abs(n) >= 100 ? 1 : 3);
}

/** Prints the closing `RESULT <name> key=value …` line. */
export function printResult(name: string, values: Record<string, number | string>): void {
  const parts = Object.entries(values).map(([k, v]) =>
    `${k}=${typeof v === "number" ? fmt(v) : v}`
  );
  console.log(`RESULT ${name} ${parts.join(" ")}`);
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
