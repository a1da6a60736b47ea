import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RegionSet } from "./_regions.ts";

describe("RegionSet", () => {
  it("merges overlapping and touching ranges and counts bytes once", () => {
    const r = new RegionSet();
    r.add(10, 20);
    r.add(30, 40);
    r.add(20, 25);
    r.add(0, 5);
    r.add(15, 35);
    assert.deepEqual(r.ranges(), [[0, 5], [10, 40]]);
    assert.equal(r.totalSize, 35);
    r.add(12, 13);
    r.add(7, 7);
    assert.equal(r.totalSize, 35);
  });

  it("answers coverage and lists the missing parts", () => {
    const r = new RegionSet();
    r.add(10, 20);
    r.add(30, 40);
    assert.equal(r.covers(12, 18), true);
    assert.equal(r.covers(15, 35), false);
    assert.equal(r.covers(5, 5), true);
    assert.deepEqual(r.missing(0, 50), [[0, 10], [20, 30], [40, 50]]);
    assert.deepEqual(r.missing(12, 18), []);
    assert.deepEqual(r.missing(15, 32), [[20, 30]]);
  });

  it("agrees with a byte map under random additions", () => {
    let seed = 42;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const r = new RegionSet();
    const bytes = new Uint8Array(2000);
    for (let i = 0; i < 300; i++) {
      const s = rnd(2000);
      const e = Math.min(2000, s + rnd(60));
      r.add(s, e);
      bytes.fill(1, s, e);
    }
    assert.equal(r.totalSize, bytes.reduce((a, b) => a + b, 0));
    for (const [s, e] of r.missing(0, 2000)) assert.ok(bytes.subarray(s, e).every((b) => b === 0));
    const rs = r.ranges();
    for (let i = 1; i < rs.length; i++) assert.ok(rs[i - 1][1] < rs[i][0], "sorted and disjoint");
  });
});
