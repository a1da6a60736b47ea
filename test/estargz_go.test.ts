/**
 * Compatibility with the Go estargz package: blobs it wrote (gzip and zstd:chunked, with and
 * without prioritized files; fixtures generated once with Go 1.19 against stargz-snapshotter
 * v0.12) open and verify with our reader and show exactly what Go's reader showed; our converter,
 * given the same layer, produces a blob whose content reads back identically.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type BlobReader,
  convertLayer,
  encodeLegacyFooter,
  type EstargzBlob,
  openBlob,
} from "../src/estargz/mod.ts";
import { buildTar, goFixtureLayer } from "./estargz_fixtures.ts";

const FIXTURES = path.join(path.dirname(new URL(import.meta.url).pathname), "fixtures", "estargz");

function memReader(b: Uint8Array): BlobReader {
  return { size: b.length, read: (o, l) => Promise.resolve(b.slice(o, o + l)) };
}

/** The listing format of the Go helper: `path type size mode uid gid [sha256 | -> link]`. */
async function listing(blob: EstargzBlob): Promise<string[]> {
  const lines: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const [base, n] of blob.children(dir)) {
      const p = dir ? `${dir}/${base}` : base;
      let line = `${p} ${n.type} ${n.type === "reg" ? n.size : 0} ${
        n.mode.toString(8)
      } ${n.uid} ${n.gid}`;
      if (n.type === "reg") {
        const h = createHash("sha256");
        for (const c of blob.chunks(n.name)) h.update(await blob.readChunk(c));
        line += ` sha256:${h.digest("hex")}`;
      }
      if (n.type === "symlink") line += ` -> ${n.linkName}`;
      lines.push(line);
      if (n.type === "dir") await walk(p);
    }
  };
  await walk("");
  return lines.sort();
}

const digests = fs.readFileSync(path.join(FIXTURES, "digests.txt"), "utf8").trim().split("\n")
  .map((l) => l.split(" ") as [string, string]);

describe("Go estargz compatibility", () => {
  for (const [file, tocDigest] of digests) {
    it(`opens and verifies ${file} written by Go`, async () => {
      const bytes = new Uint8Array(fs.readFileSync(path.join(FIXTURES, file)));
      const blob = await openBlob(memReader(bytes), { expectedTocDigest: tocDigest });
      assert.equal(blob.format, file.includes("zstd") ? "zstd" : "gzip");
      assert.ok(await blob.verifyAll() > 0);
      const want = fs.readFileSync(path.join(FIXTURES, file.replace(/\.blob$/, ".list")), "utf8")
        .trim().split("\n");
      assert.deepEqual(await listing(blob), want);
      if (!file.includes("prio")) {
        // Go writes an owner name once per id; later entries inherit it, earlier ones do not.
        assert.equal(blob.entry("etc")?.userName, "");
        assert.equal(blob.entry("bin/tool")?.userName, "root");
        assert.equal(blob.entry("bin/tool")?.groupName, "root");
        assert.equal(
          (await blob.readToc()).entries.find((e) => e.name === "bin/tool")?.userName,
          undefined,
        );
      }
      if (blob.format === "gzip") {
        const legacy = new Uint8Array(bytes.length - 4);
        legacy.set(bytes.subarray(0, bytes.length - 51));
        legacy.set(encodeLegacyFooter(blob.tocOffset), bytes.length - 51);
        const lb = await openBlob(memReader(legacy), { expectedTocDigest: tocDigest });
        assert.equal(lb.format, "legacy-gzip");
        assert.ok(await lb.verifyAll() > 0);
      }
    });
  }

  for (const format of ["gzip", "zstd"] as const) {
    it(`our ${format} conversion of the same layer reads back as Go's did`, async () => {
      const chunks: Uint8Array[] = [];
      const res = await convertLayer(buildTar(goFixtureLayer()), {
        write: (b) => Promise.resolve(chunks.push(b.slice())),
      }, { format, chunkSize: 4096, workers: 0 });
      const blob = await openBlob(memReader(Buffer.concat(chunks)), {
        expectedTocDigest: res.tocDigest,
      });
      const want = fs.readFileSync(path.join(FIXTURES, `go-${format}.list`), "utf8").trim()
        .split("\n");
      assert.deepEqual(await listing(blob), want);
    });
  }
});
