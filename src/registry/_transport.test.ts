import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backoffMs, retryableStatus } from "./_transport.ts";

const policy = { maxRetries: 5, minWaitMsec: 30, maxWaitMsec: 1000 };

describe("retry policy", () => {
  it("retries 429 and 5xx except 501", () => {
    assert.deepEqual(
      [400, 401, 403, 404, 429, 500, 501, 502, 503, 504].filter(retryableStatus),
      [429, 500, 502, 503, 504],
    );
  });

  it("backs off exponentially with jitter in [d, 2d), capped by max_wait_msec", () => {
    for (let attempt = 0; attempt < 8; attempt++) {
      const d = Math.min(1000, 30 * 2 ** attempt);
      for (let i = 0; i < 50; i++) {
        const w = backoffMs(attempt, policy);
        assert.ok(w >= d && w < 2 * d + 1e-9 && w <= Math.max(1000, d), `${attempt}: ${w}`);
      }
    }
  });

  it("honours Retry-After in seconds or as a date on 429 and 503 only", () => {
    const res = (status: number, ra: string) =>
      new Response(null, { status, headers: { "retry-after": ra } });
    assert.equal(backoffMs(0, policy, res(429, "2")), 2000);
    assert.equal(backoffMs(3, policy, res(503, "0")), 0);
    const at = new Date(Date.now() + 3000).toUTCString();
    const w = backoffMs(0, policy, res(503, at));
    assert.ok(w > 1000 && w <= 3000, String(w));
    const plain = backoffMs(0, policy, res(500, "9"));
    assert.ok(plain >= 30 && plain < 60);
  });
});
