/**
 * The eStargz commands end to end, run from source with the current runtime: convert (layer and
 * OCI layout), get-toc-digest, toc, verify (good and damaged blobs).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { fileBlobReader, openBlob } from "../src/estargz/mod.ts";
import { scriptCommand } from "../src/runtime/mod.ts";
import { buildTar, randomBytes, sha256 } from "./estargz_fixtures.ts";

const MAIN = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "src", "main.ts");

function stargz(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...rest] = scriptCommand(MAIN, args);
  return new Promise((resolve) => {
    execFile(cmd, rest, { maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function writeBlob(dir: string, data: Uint8Array): { digest: string; size: number } {
  const digest = sha256(data);
  fs.writeFileSync(path.join(dir, "blobs", "sha256", digest.slice(7)), data);
  return { digest, size: data.length };
}

describe("stargz convert / get-toc-digest / toc / verify", () => {
  let dir: string;
  let tarFile: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "estargz-cli-"));
    tarFile = path.join(dir, "layer.tar");
    fs.writeFileSync(
      tarFile,
      buildTar([
        { name: "etc/", type: "dir", mode: 0o755 },
        { name: "etc/hosts", type: "reg", data: new TextEncoder().encode("127.0.0.1 localhost\n") },
        { name: "bin/tool", type: "reg", data: randomBytes(200_000, 9), mode: 0o755 },
      ]),
    );
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("converts a layer and prints its digests; the other commands agree", async () => {
    const list = path.join(dir, "prio");
    fs.writeFileSync(list, "bin/tool\n");
    for (const zstd of [false, true]) {
      const out = path.join(dir, zstd ? "out.zst" : "out.gz");
      const args = ["convert", "--chunk-size", "65536", "--prioritized-files", list];
      if (zstd) args.push("--zstdchunked");
      const r = await stargz([...args, tarFile, out]);
      assert.equal(r.code, 0, r.stderr);
      const res = JSON.parse(r.stdout);
      assert.deepEqual(Object.keys(res).sort(), [
        "diffID",
        "digest",
        "size",
        "tocDigest",
        "uncompressedSize",
      ]);
      assert.equal(res.digest, sha256(fs.readFileSync(out)));

      const d = await stargz(["get-toc-digest", out]);
      assert.equal(d.code, 0, d.stderr);
      assert.equal(d.stdout.trim(), res.tocDigest);

      const t = await stargz(["toc", out]);
      assert.equal(t.code, 0, t.stderr);
      const toc = JSON.parse(t.stdout);
      assert.equal(toc.version, 1);
      assert.deepEqual(
        toc.entries.filter((e: { type: string }) => e.type !== "chunk").map((e: { name: string }) =>
          e.name
        ),
        ["bin/tool", ".prefetch.landmark", "etc", "etc/hosts"],
      );

      const v = await stargz(["verify", "--toc-digest", res.tocDigest, out]);
      assert.equal(v.code, 0, v.stderr);
      assert.equal(JSON.parse(v.stdout).ok, true);
    }
  });

  it("verify fails on a damaged chunk and names the entry", async () => {
    const out = path.join(dir, "bad.gz");
    const r = await stargz(["convert", "--chunk-size", "65536", tarFile, out]);
    assert.equal(r.code, 0, r.stderr);
    const reader = await fileBlobReader(out);
    const blob = await openBlob(reader);
    const c = blob.chunks("bin/tool")[2];
    await reader.close();
    const bytes = fs.readFileSync(out);
    bytes[c.compressedOffset + 100] ^= 0xff;
    fs.writeFileSync(out, bytes);
    const v = await stargz(["verify", out]);
    assert.equal(v.code, 1);
    assert.match(v.stderr, /bin\/tool/);
    assert.match(v.stderr, /131072/);
    const w = await stargz(["verify", "--toc-digest", sha256(new Uint8Array(1)), out]);
    assert.equal(w.code, 1);
    assert.match(w.stderr, /TOC digest mismatch/);
  });

  it("converts an OCI image layout", async () => {
    const src = path.join(dir, "oci");
    const dst = path.join(dir, "oci-esgz");
    fs.mkdirSync(path.join(src, "blobs", "sha256"), { recursive: true });
    const tar = fs.readFileSync(tarFile);
    const layer = writeBlob(src, zlib.gzipSync(tar));
    const config = writeBlob(
      src,
      new TextEncoder().encode(JSON.stringify({
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [sha256(tar)] },
      })),
    );
    const manifest = writeBlob(
      src,
      new TextEncoder().encode(JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
      })),
    );
    fs.writeFileSync(
      path.join(src, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...manifest,
          annotations: { "org.opencontainers.image.ref.name": "latest" },
        }],
      }),
    );
    fs.writeFileSync(path.join(src, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');

    const r = await stargz(["convert", "--oci-layout", src, dst]);
    assert.equal(r.code, 0, r.stderr);
    const blob = (d: string) => path.join(dst, "blobs", "sha256", d.slice(7));
    const index = JSON.parse(fs.readFileSync(path.join(dst, "index.json"), "utf8"));
    const mdesc = index.manifests[0];
    assert.equal(mdesc.annotations["org.opencontainers.image.ref.name"], "latest");
    assert.notEqual(mdesc.digest, manifest.digest);
    const mbytes = fs.readFileSync(blob(mdesc.digest));
    assert.equal(sha256(mbytes), mdesc.digest);
    const m = JSON.parse(mbytes.toString());
    const l = m.layers[0];
    assert.equal(l.mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
    const lbytes = fs.readFileSync(blob(l.digest));
    assert.equal(sha256(lbytes), l.digest);
    assert.equal(l.size, lbytes.length);
    const cbytes = fs.readFileSync(blob(m.config.digest));
    assert.equal(sha256(cbytes), m.config.digest);
    const cfg = JSON.parse(cbytes.toString());
    const untarred = zlib.gunzipSync(lbytes);
    assert.deepEqual(cfg.rootfs.diff_ids, [sha256(untarred)]);
    assert.equal(cfg.architecture, "amd64");
    assert.equal(l.annotations["io.containers.estargz.uncompressed-size"], String(untarred.length));
    const reader = await fileBlobReader(blob(l.digest));
    try {
      const eb = await openBlob(reader, {
        expectedTocDigest: l.annotations["containerd.io/snapshot/stargz/toc.digest"],
      });
      assert.equal(eb.entry("etc/hosts")?.size, 20);
    } finally {
      await reader.close();
    }
  });

  it("reports usage errors and missing inputs", async () => {
    const a = await stargz(["convert", tarFile]);
    assert.equal(a.code, 2);
    const b = await stargz(["get-toc-digest", path.join(dir, "nope")]);
    assert.equal(b.code, 1);
    const c = await stargz(["verify", tarFile]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /footer/);
  });
});
