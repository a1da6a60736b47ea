/**
 * Load: many containers of several lazily pulled images started at once through one daemon, with
 * background fetch running; every start must succeed and every container must read its files
 * intact (through its own overlay, `/proc/<pid>/root`).
 *
 * CI starts `STARGZ_LOAD_CONTAINERS` (default 10) containers from 5 busybox-based images; the
 * issue's 50 was run once with `STARGZ_LOAD_CONTAINERS=50` (see docs/benchmarks.md).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs/promises";
import { startFleet } from "./_fleet.ts";
import type { Fleet } from "./_fleet.ts";

const CONTAINERS = Number(process.env.STARGZ_LOAD_CONTAINERS ?? 10);
const IMAGES = 5;

let fleet: Fleet;

before(async () => {
  fleet = await startFleet({ images: IMAGES, filesPerImage: 4, fileSize: 256 << 10 });
});

after(async () => {
  await fleet?.stop();
});

describe("load", () => {
  it(`starts ${CONTAINERS} containers of ${IMAGES} images at once, and each reads its files`, async () => {
    const which = Array.from({ length: CONTAINERS }, (_, i) => fleet.images[i % IMAGES]);
    const names = await fleet.start(which, ["/bin/sleep", "100000"]);
    try {
      const tasks = await fleet.containerd.ctrOk(["task", "ls"], { namespace: "k8s.io" });
      for (const n of names) assert.match(tasks, new RegExp(`^${n}\\s+\\d+\\s+RUNNING`, "m"));
      await Promise.all(names.map(async (name, i) => {
        const pid = await fleet.pid(name);
        for (const f of which[i].files) {
          const data = await fs.readFile(`/proc/${pid}/root${f.path}`);
          assert.equal(
            createHash("sha256").update(data).digest("hex"),
            f.sha256,
            `${name} ${f.path}`,
          );
        }
      }));
      assert.doesNotMatch(fleet.daemon.logs(), /"msg":"layer error"/);
    } finally {
      await fleet.remove(names);
    }
  });
});
