/**
 * Round trips: generated tars with every entry kind → convertLayer (gzip and zstd, with and
 * without min-chunk-size and prioritized files) → openBlob → every node's metadata and bytes
 * equal the input; the blob decompresses to a tar that `tar -t` lists.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import {
  convertLayer,
  decodeXattrs,
  type EstargzBlob,
  fileBlobReader,
  NO_PREFETCH_LANDMARK,
  openBlob,
  PREFETCH_LANDMARK,
} from "../src/estargz/mod.ts";
import { buildTar, sampleLayer, sha256, type TarSpec, TEST_CHUNK } from "./estargz_fixtures.ts";

const clean = (n: string) => n.split("/").filter((p) => p && p !== ".").join("/");

interface Variant {
  format: "gzip" | "zstd";
  minChunkSize: number;
  prioritized?: string[];
}

const VARIANTS: Variant[] = [
  { format: "gzip", minChunkSize: 0 },
  { format: "gzip", minChunkSize: 16384, prioritized: ["hard", "b/c/empty", "big", "missing"] },
  { format: "zstd", minChunkSize: 0, prioritized: ["b/hard2", "zeros"] },
  { format: "zstd", minChunkSize: 16384 },
];

async function readFile(blob: EstargzBlob, name: string): Promise<Uint8Array> {
  const parts = await Promise.all(blob.chunks(name).map((c) => blob.readChunk(c)));
  return Buffer.concat(parts);
}

describe("estargz round trip", () => {
  let dir: string;
  let tarFile: string;
  const specs = sampleLayer();
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "estargz-rt-"));
    tarFile = path.join(dir, "in.tar");
    fs.writeFileSync(tarFile, buildTar(specs));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const v of VARIANTS) {
    const label = `${v.format} minChunkSize=${v.minChunkSize} prioritized=${
      v.prioritized?.join(",") ?? "-"
    }`;
    it(label, async () => {
      const out = path.join(dir, `out-${v.format}-${v.minChunkSize}-${v.prioritized ? 1 : 0}`);
      const res = await convertLayer(tarFile, out, {
        format: v.format,
        chunkSize: TEST_CHUNK,
        minChunkSize: v.minChunkSize,
        prioritizedFiles: v.prioritized,
      });
      const bytes = fs.readFileSync(out);
      assert.equal(res.size, bytes.length);
      assert.equal(res.digest, sha256(bytes));
      assert.deepEqual(
        res.missedPrioritizedFiles,
        v.prioritized?.includes("missing") ? ["missing"] : [],
      );

      const reader = await fileBlobReader(out);
      try {
        const blob = await openBlob(reader, { expectedTocDigest: res.tocDigest });
        assert.equal(blob.format, v.format);
        assert.equal(blob.tocDigest, res.tocDigest);
        const toc = await blob.readToc();
        // Raw TOC entries by name (the later wins), for the fields the index fills in itself.
        const tocEntries = new Map(
          toc.entries.filter((e) => e.type !== "chunk").map((e) => [clean(e.name), e]),
        );

        // The later of two entries with one name wins, as in extraction.
        const final = new Map<string, TarSpec>();
        for (const s of specs) final.set(clean(s.name), s);
        for (const [name, s] of final) {
          const node = blob.entry(name);
          assert.ok(node, `missing ${name}`);
          if (s.type === "hardlink") {
            let target = final.get(clean(s.linkName!))!;
            while (target.type === "hardlink") target = final.get(clean(target.linkName!))!;
            assert.equal(node, blob.entry(clean(target.name)), `${name} is the same node`);
            continue;
          }
          assert.equal(node.type, s.type, name);
          assert.equal(node.mode, s.mode ?? 0o644, `${name} mode`);
          assert.equal(node.uid, s.uid ?? 0, `${name} uid`);
          assert.equal(node.gid, s.gid ?? 0, `${name} gid`);
          assert.equal(node.modtimeMs, Math.round((s.mtimeMs ?? 0) / 1000) * 1000, `${name} mtime`);
          const entry = tocEntries.get(name);
          assert.equal(entry?.userName, s.userName, `${name} userName`);
          assert.equal(entry?.groupName, s.groupName, `${name} groupName`);
          if (s.type === "symlink") assert.equal(node.linkName, s.linkName);
          if (s.type === "char" || s.type === "block") {
            assert.equal(node.devMajor, s.devMajor);
            assert.equal(node.devMinor, s.devMinor);
          }
          const xattrs = decodeXattrs(node);
          assert.deepEqual(
            Object.fromEntries([...xattrs].map(([k, x]) => [k, Buffer.from(x).toString("hex")])),
            Object.fromEntries(
              Object.entries(s.xattrs ?? {}).map(([k, x]) => [k, Buffer.from(x).toString("hex")]),
            ),
          );
          if (s.type === "reg") {
            const data = s.data ?? new Uint8Array(0);
            assert.equal(node.size, data.length, `${name} size`);
            const got = await readFile(blob, name);
            assert.ok(Buffer.from(got).equals(Buffer.from(data)), `${name} content`);
            assert.equal(entry?.digest, sha256(data));
            for (const c of blob.chunks(name)) {
              assert.ok(c.chunkSize <= TEST_CHUNK);
              assert.equal(blob.chunkAt(name, c.chunkOffset + c.chunkSize - 1), c);
            }
          }
        }
        // Link counts and implied directories.
        assert.equal(blob.entry("small1")?.numLink, 3);
        assert.equal(blob.entry("implied")?.type, "dir");
        assert.equal(blob.entry("implied/deep")?.type, "dir");
        assert.deepEqual([...blob.children("implied/deep").keys()], ["file"]);
        assert.equal(blob.entry("b")?.numLink, 3);
        assert.ok(blob.children("").has(".wh.gone"));
        assert.ok(blob.children("b").has(".wh..wh..opq"));
        assert.equal(blob.chunks("big").length, 6);
        // Nodes work wherever paths do; each call lists the same chunk objects.
        const bigNode = blob.entry("big")!;
        const byPath = blob.chunks("big");
        blob.chunks(bigNode).forEach((c, i) => assert.equal(c, byPath[i]));
        assert.equal(blob.chunkAt(bigNode, TEST_CHUNK), blob.chunkAt("big", TEST_CHUNK));
        assert.equal(blob.children(blob.entry("b")!), blob.children("b"));
        assert.equal(blob.chunkAt("big", 5 * TEST_CHUNK)?.chunkOffset, 5 * TEST_CHUNK);
        assert.equal(blob.chunkAt("big", 5 * TEST_CHUNK + 123), undefined);
        if (v.minChunkSize > 0) {
          assert.ok(
            blob.chunks("small2")[0].innerOffset > 0,
            "small payloads share a member",
          );
        }

        // Landmarks start their own member, so prefetching up to one never cuts a member.
        const lm = blob.chunks(v.prioritized ? PREFETCH_LANDMARK : NO_PREFETCH_LANDMARK)[0];
        assert.equal(lm.innerOffset, 0);
        // Landmark and prioritized order.
        const names = toc.entries.filter((e) => e.type !== "chunk").map((e) => e.name);
        if (v.prioritized) {
          const at = names.indexOf(PREFETCH_LANDMARK);
          assert.ok(at > 0);
          for (const p of v.prioritized.filter((p) => p !== "missing")) {
            assert.ok(names.indexOf(p) < at, `${p} before the landmark`);
          }
          if (v.prioritized.includes("b/hard2")) {
            assert.ok(names.indexOf("hard") < names.indexOf("b/hard2"));
            assert.ok(names.indexOf("small1") < names.indexOf("hard"));
          }
        } else {
          assert.equal(names[0], NO_PREFETCH_LANDMARK);
        }
        assert.equal(await blob.verifyAll() > 0, true);
      } finally {
        await reader.close();
      }

      // An eStargz-agnostic consumer sees a plain compressed tar with every input entry.
      const tool = v.format === "gzip" ? "gzip" : "zstd";
      const tar = execFileSync(tool, ["-dc", out], { maxBuffer: 64 << 20 });
      assert.equal(sha256(tar), res.diffID);
      assert.equal(tar.length, res.uncompressedSize);
      const listed = execFileSync("tar", ["-t"], { input: tar, maxBuffer: 16 << 20 })
        .toString().split("\n").filter(Boolean);
      for (const s of specs) assert.ok(listed.includes(s.name), `tar -t lists ${s.name}`);
    });
  }

  it("reads gzip and zstd input layers", async () => {
    const gz = path.join(dir, "in.tar.gz");
    execFileSync("sh", [
      "-c",
      `gzip -c ${tarFile} > ${gz} && zstd -q -f ${tarFile} -o ${tarFile}.zst`,
    ]);
    const a = await convertLayer(tarFile, path.join(dir, "a"), { chunkSize: TEST_CHUNK });
    const b = await convertLayer(gz, path.join(dir, "b"), { chunkSize: TEST_CHUNK });
    const c = await convertLayer(`${tarFile}.zst`, path.join(dir, "c"), { chunkSize: TEST_CHUNK });
    assert.equal(b.tocDigest, a.tocDigest);
    assert.equal(c.tocDigest, a.tocDigest);
    assert.equal(b.diffID, a.diffID);
    // Several zstd frames (as pzstd or zstd:chunked write them), skippable frames in between.
    const tar = fs.readFileSync(tarFile);
    const cut = 300 * 1024 + 17;
    const multi = Buffer.concat([
      zlib.zstdCompressSync(tar.subarray(0, cut)),
      Buffer.from([0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]),
      zlib.zstdCompressSync(tar.subarray(cut)),
    ]);
    const d = await convertLayer(multi, path.join(dir, "d"), { chunkSize: TEST_CHUNK });
    assert.equal(d.tocDigest, a.tocDigest);
    // An eStargz blob as input: its TOC and landmark are replaced, the rest is kept.
    for (const format of ["gzip", "zstd"] as const) {
      const again = path.join(dir, `again-${format}`);
      await convertLayer(path.join(dir, "a"), again + ".src", { chunkSize: TEST_CHUNK, format });
      const e = await convertLayer(again + ".src", again, { chunkSize: TEST_CHUNK });
      assert.equal(e.tocDigest, a.tocDigest);
    }
  });

  it("streams input from a ReadableStream", async () => {
    const stream = ReadableStream.from([fs.readFileSync(tarFile)]);
    const a = await convertLayer(stream, path.join(dir, "s"), {
      chunkSize: TEST_CHUNK,
      workers: 0,
    });
    const b = await convertLayer(tarFile, path.join(dir, "t"), { chunkSize: TEST_CHUNK });
    assert.equal(a.tocDigest, b.tocDigest);
    assert.equal(a.digest, b.digest);
  });
});
