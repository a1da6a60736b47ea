/** docs/config.md and the schema must agree: same keys, same defaults, same status. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { parse as parseToml } from "smol-toml";
import { dottedKey, leafKeys } from "./_keys.ts";
import { ConfigSchema } from "./_schema.ts";
import { UNIMPLEMENTED_KEYS } from "./mod.ts";

interface DocRow {
  key: string;
  default: string;
  status: string;
}

/**
 * The key tables of docs/config.md: a `## …` heading holding `[table]` or `[[array]]` in
 * backticks sets the prefix of the rows below it (no backticks: top level).
 */
function docRows(): DocRow[] {
  const text = fs.readFileSync(new URL("../../docs/config.md", import.meta.url), "utf8");
  const rows: DocRow[] = [];
  let prefix = "";
  for (const line of text.split("\n")) {
    const heading = /^## (.*)$/.exec(line);
    if (heading) {
      const table = /`\[(\[?)(.+?)\]?\]`/.exec(heading[1]);
      prefix = table ? `${table[2]}${table[1] ? "[]" : ""}` : "";
      continue;
    }
    const cells = line.split("|").slice(1, -1).map((c) => c.trim());
    const key = /^`([^`]+)`$/.exec(cells[0] ?? "");
    if (cells.length < 5 || !key) continue;
    rows.push({
      key: prefix ? `${prefix}.${key[1]}` : key[1],
      default: cells[2],
      status: cells[3],
    });
  }
  return rows;
}

const SCHEMA = new Map(leafKeys(ConfigSchema).map((k) => [dottedKey(k.path), k.default]));

describe("docs/config.md", () => {
  const rows = docRows();

  it("documents every schema key once, and no other key", () => {
    const documented = rows.map((r) => r.key);
    assert.equal(new Set(documented).size, documented.length, "no key documented twice");
    assert.deepEqual([...documented].sort(), [...SCHEMA.keys()].sort());
  });

  it("gives each key its schema default", () => {
    for (const row of rows) {
      const expected = SCHEMA.get(row.key);
      const literal = /^`(.*)`$/.exec(row.default);
      if (expected === undefined) {
        assert.equal(row.default, "required", row.key);
        continue;
      }
      assert.ok(literal, `${row.key}: default in backticks`);
      // smol-toml builds tables without a prototype; compare plain values.
      const documented = JSON.parse(JSON.stringify(parseToml(`v = ${literal[1]}`).v));
      assert.deepEqual(documented, expected, row.key);
    }
  });

  it("marks exactly the UNIMPLEMENTED_KEYS as ignored", () => {
    const ignored = rows.filter((r) => r.status === "ignored").map((r) => r.key).sort();
    assert.deepEqual(ignored, Object.keys(UNIMPLEMENTED_KEYS).sort());
    for (const r of rows) assert.ok(["ignored", "supported"].includes(r.status), r.key);
  });
});
