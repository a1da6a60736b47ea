import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Logger, parseLogLevel, rfc3339Nano, setLogLevel, setLogSink } from "./mod.ts";

describe("log", () => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  afterEach(() => {
    lines.length = 0;
    setLogLevel("info");
  });

  it("writes logrus-shaped JSON lines with fields", () => {
    new Logger({ layer: "sha256:ab" }).info("mounted", { took: 3, err: new Error("boom") });
    assert.equal(lines.length, 1);
    const rec = JSON.parse(lines[0]);
    assert.equal(rec.level, "info");
    assert.equal(rec.msg, "mounted");
    assert.equal(rec.layer, "sha256:ab");
    assert.equal(rec.took, 3);
    assert.equal(rec.err, "boom");
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  });

  it("filters by level", () => {
    setLogLevel("warn");
    const l = new Logger();
    l.info("hidden");
    l.debug("hidden");
    l.warn("shown");
    l.error("shown");
    assert.deepEqual(lines.map((x) => JSON.parse(x).msg), ["shown", "shown"]);
  });

  it("parses level names like logrus", () => {
    assert.equal(parseLogLevel("WARNING"), "warn");
    assert.equal(parseLogLevel("trace"), "trace");
    assert.equal(parseLogLevel("verbose"), undefined);
  });

  it("has a clock that tracks wall time", () => {
    const t = Date.parse(rfc3339Nano().replace(/(\.\d{3})\d{6}Z$/, "$1Z"));
    assert.ok(Math.abs(t - Date.now()) < 1000);
  });

  it("restores the sink", () => {
    assert.equal(typeof prev, "function");
  });
});
