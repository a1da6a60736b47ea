import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ByteSource, type TarHeader, TarReader } from "./_tar.ts";

async function readAll(file: string): Promise<Map<string, { h: TarHeader; data: string }>> {
  const tr = new TarReader(new ByteSource(fs.createReadStream(file)));
  const out = new Map<string, { h: TarHeader; data: string }>();
  for (;;) {
    const e = await tr.next();
    if (!e) break;
    let data = "";
    for (;;) {
      const p = await tr.readData(1 << 16);
      if (!p) break;
      data += Buffer.from(p).toString();
    }
    out.set(e.header.name, { h: e.header, data });
  }
  return out;
}

describe("tar reader on archives written by GNU tar", () => {
  let dir: string;
  const longName = "d/" + "x".repeat(150);
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "estargz-tar-"));
    const src = path.join(dir, "src");
    fs.mkdirSync(path.join(src, "d"), { recursive: true });
    fs.writeFileSync(path.join(src, longName), "long");
    fs.writeFileSync(path.join(src, "ids"), "ids");
    fs.symlinkSync(longName, path.join(src, "link"));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const format of ["gnu", "pax", "ustar"] as const) {
    it(`reads --format=${format}: long names, big ids, links`, async () => {
      const file = path.join(dir, `${format}.tar`);
      const bigId = format === "ustar" ? 1000 : 3000000;
      execFileSync("tar", [
        "-cf",
        file,
        `--format=${format}`,
        `--owner=${bigId}`,
        `--group=${bigId + 1}`,
        "--mtime=@1700000000",
        "-C",
        path.join(dir, "src"),
        ...(format === "ustar" ? ["ids"] : ["d", "ids", "link"]),
      ]);
      const got = await readAll(file);
      const ids = got.get("ids")!;
      assert.equal(ids.data, "ids");
      assert.equal(ids.h.uid, bigId);
      assert.equal(ids.h.gid, bigId + 1);
      assert.equal(ids.h.mtimeMs, 1700000000000);
      if (format !== "ustar") {
        assert.equal(got.get(longName)?.data, "long");
        assert.equal(got.get("link")?.h.typeflag, "2");
        assert.equal(got.get("link")?.h.linkName, longName);
        assert.equal(got.get("d/")?.h.typeflag, "5");
      }
    });
  }

  it("rejects a header with a bad checksum", async () => {
    const file = path.join(dir, "bad.tar");
    execFileSync("tar", ["-cf", file, "-C", path.join(dir, "src"), "ids"]);
    const b = fs.readFileSync(file);
    b[0] ^= 1;
    fs.writeFileSync(file, b);
    await assert.rejects(readAll(file), /checksum/);
  });
});
