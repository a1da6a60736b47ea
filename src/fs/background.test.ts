import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BackgroundScheduler } from "./_background.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("BackgroundScheduler", () => {
  it("bounds concurrency", async () => {
    const s = new BackgroundScheduler(2, 0);
    let now = 0;
    let peak = 0;
    await Promise.all(Array.from({ length: 6 }, () =>
      s.run(async () => {
        peak = Math.max(peak, ++now);
        await sleep(10);
        now--;
      })));
    assert.equal(peak, 2);
    assert.equal(s.running, 0);
  });

  it("waits while on-demand reads run and for the silence period after them", async () => {
    const s = new BackgroundScheduler(1, 150);
    const end = s.beginOnDemand();
    let ranAt = 0;
    const job = s.run(() => Promise.resolve(ranAt = Date.now()));
    await sleep(100);
    assert.equal(ranAt, 0, "held back while a read is active");
    const endedAt = Date.now();
    end();
    end(); // ending twice is harmless
    await job;
    assert.ok(ranAt - endedAt >= 140, `ran ${ranAt - endedAt} ms after the read ended`);
  });

  it("treats its creation and a mount (touch) as activity", async () => {
    const s = new BackgroundScheduler(1, 120);
    const t0 = Date.now();
    await s.run(() => Promise.resolve());
    assert.ok(Date.now() - t0 >= 110, "a fresh scheduler waits one silence period");
    const t1 = Date.now();
    s.touch();
    await s.run(() => Promise.resolve());
    assert.ok(Date.now() - t1 >= 110, "a touch restarts the silence period");
  });

  it("stops waiting when aborted", async () => {
    const s = new BackgroundScheduler(1, 10_000);
    s.beginOnDemand();
    const ac = new AbortController();
    const job = s.run(() => Promise.resolve(1), ac.signal);
    ac.abort();
    await assert.rejects(job);
  });
});
