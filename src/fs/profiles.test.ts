import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ProfileStore } from "./_profiles.ts";

describe("ProfileStore", () => {
  it("keeps profiles across reopening, replaces one per layer, and drops the oldest over the cap", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-profiles-"));
    try {
      let store = ProfileStore.open(root, 2);
      store.save("sha256:a", ["bin/sh", "etc/passwd"]);
      store.save("sha256:b", ["usr/bin/python3"]);
      store.close();
      store = ProfileStore.open(root, 2);
      assert.deepEqual(store.files("sha256:a"), ["bin/sh", "etc/passwd"]);
      store.save("sha256:a", ["bin/sh"]);
      store.save("sha256:c", ["lib/libc.so.6"]);
      assert.deepEqual(store.list().map((p) => [p.layer, p.files]), [
        ["sha256:c", 1],
        ["sha256:a", 1],
      ]);
      assert.equal(store.files("sha256:b"), undefined);
      store.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("treats a damaged row as no profile", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "stargz-profiles-"));
    try {
      const store = ProfileStore.open(root, 10);
      store.save("sha256:a", ["x"]);
      const db = new DatabaseSync(path.join(root, "prefetch_profiles.db"));
      db.prepare("UPDATE prefetch_profiles SET files = ? WHERE layer = ?").run(
        '{"no":1}',
        "sha256:a",
      );
      db.close();
      assert.equal(store.files("sha256:a"), undefined);
      store.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
