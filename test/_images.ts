/**
 * Test images built from this machine's Debian packages (busybox-static) and generated files:
 * root filesystem trees, layer tars made by the real `tar`, eStargz conversion with our own
 * converter, and pushes to the test registry.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { convertLayer } from "../src/estargz/mod.ts";
import type { ConvertOptions } from "../src/estargz/mod.ts";
import { MEDIA, pushImage, testBytes } from "./_registry.ts";
import type { PushedImage, TestLayer, TestRegistry } from "./_registry.ts";

/** Applets linked into the busybox test rootfs. */
const APPLETS = [
  "sh",
  "echo",
  "cat",
  "ls",
  "sha256sum",
  "find",
  "stat",
  "wc",
  "head",
  "sleep",
  "true",
];

/** Deterministic pseudo-random bytes (the registry harness' generator). */
export const patternBytes: (size: number, seed: number) => Uint8Array = testBytes;

/** A minimal busybox root filesystem in `dir` (needs Debian's busybox-static). */
export function makeBusyboxRoot(dir: string): void {
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true });
  for (const d of ["etc", "tmp", "proc", "sys", "dev"]) {
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  }
  fs.copyFileSync("/bin/busybox", path.join(dir, "bin", "busybox"));
  fs.chmodSync(path.join(dir, "bin", "busybox"), 0o755);
  for (const a of APPLETS) fs.symlinkSync("busybox", path.join(dir, "bin", a));
  fs.writeFileSync(path.join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  fs.writeFileSync(path.join(dir, "etc", "group"), "root:x:0:\n");
}

/** `tar -C dir -cf out .` with the real tar (numeric owners, sorted names, xattrs). */
export function tarDir(dir: string, out: string): void {
  execFileSync("tar", [
    "--xattrs",
    "--xattrs-include=*",
    "--numeric-owner",
    "--sort=name",
    "-C",
    dir,
    "-cf",
    out,
    ".",
  ]);
}

/** A layer ready to push: its blob, media type, annotations and diff ID. */
export interface BuiltLayer extends TestLayer {
  diffID: string;
}

/** Converts a layer tar to eStargz with our converter (annotations as upstream sets them). */
export async function estargzLayer(
  tarPath: string,
  opts: ConvertOptions = {},
): Promise<BuiltLayer> {
  const out = `${tarPath}.esgz`;
  const res = await convertLayer(tarPath, out, opts);
  const data = new Uint8Array(fs.readFileSync(out));
  return {
    data,
    mediaType: opts.format === "zstd"
      ? "application/vnd.oci.image.layer.v1.tar+zstd"
      : MEDIA.ociLayerGzip,
    annotations: {
      "containerd.io/snapshot/stargz/toc.digest": res.tocDigest,
      "io.containers.estargz.uncompressed-size": String(res.uncompressedSize),
    },
    diffID: res.diffID,
  };
}

/** A plain gzip layer (what an ordinary image has). */
export function plainLayer(tarPath: string): BuiltLayer {
  const tar = fs.readFileSync(tarPath);
  return {
    data: new Uint8Array(gzipSync(tar)),
    mediaType: MEDIA.ociLayerGzip,
    diffID: `sha256:${createHash("sha256").update(tar).digest("hex")}`,
  };
}

/** Pushes an image of `layers` (bottom first) for linux/amd64 with a runnable config. */
export function pushLayers(
  reg: TestRegistry,
  repo: string,
  tag: string,
  layers: readonly BuiltLayer[],
  cmd: readonly string[] = ["/bin/sh"],
): Promise<PushedImage> {
  return pushImage(reg, repo, tag, {
    layers: layers.map(({ data, mediaType, annotations }) => ({ data, mediaType, annotations })),
    config: {
      architecture: "amd64",
      os: "linux",
      config: { Env: ["PATH=/bin"], Cmd: [...cmd], WorkingDir: "/" },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffID) },
    },
  });
}
