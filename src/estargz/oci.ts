/**
 * Image-level conversion of a local OCI image layout: index → manifests → layers, each layer
 * converted with {@link convertLayer}; configs get new `rootfs.diff_ids`, layers get the eStargz
 * annotations, and every digest above them is recomputed.
 */
import { createHash } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import * as v from "valibot";
import { EstargzError } from "./errors.ts";
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from "./toc.ts";
import { convertLayer, type ConvertOptions } from "./writer.ts";

const MT_INDEX = "application/vnd.oci.image.index.v1+json";
const MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const LAYER_TYPES = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
]);

const Descriptor = v.looseObject({
  mediaType: v.string(),
  digest: v.pipe(v.string(), v.regex(/^sha256:[0-9a-f]{64}$/)),
  size: v.pipe(v.number(), v.integer(), v.minValue(0)),
  annotations: v.optional(v.record(v.string(), v.string())),
});
type Descriptor = v.InferOutput<typeof Descriptor>;
const Index = v.looseObject({
  schemaVersion: v.literal(2),
  mediaType: v.optional(v.string()),
  manifests: v.array(Descriptor),
});
const Manifest = v.looseObject({
  schemaVersion: v.literal(2),
  mediaType: v.optional(v.string()),
  config: Descriptor,
  layers: v.array(Descriptor),
});
const Config = v.looseObject({
  rootfs: v.looseObject({ type: v.string(), diff_ids: v.array(v.string()) }),
});

/** Options of {@link convertOciLayout}. */
export interface OciConvertOptions extends ConvertOptions {
  /**
   * The files to place first in the layer converted from `layerDigest` (a recorded profile of
   * that layer); when it gives nothing, `prioritizedFiles` applies.
   */
  prioritizedFilesOf?: (layerDigest: string) => readonly string[] | undefined;
}

/** What {@link convertOciLayout} did. */
export interface OciConvertResult {
  /** Descriptors of the converted manifests (as listed in the new index.json). */
  manifests: Descriptor[];
  /** Number of layers converted. */
  layers: number;
}

function blobPath(dir: string, digest: string): string {
  const [alg, hex] = digest.split(":");
  return path.join(dir, "blobs", alg, hex);
}

async function readJson<S extends v.GenericSchema>(
  schema: S,
  file: string,
  what: string,
): Promise<v.InferOutput<S>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await fsp.readFile(file, "utf8"));
  } catch (err) {
    throw new EstargzError("toc", `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
  const r = v.safeParse(schema, raw);
  if (!r.success) {
    throw new EstargzError("toc", `${what} ${file} is invalid: ${r.issues[0].message}`);
  }
  return r.output;
}

async function writeBlob(dst: string, mediaType: string, data: Uint8Array): Promise<Descriptor> {
  const digest = "sha256:" + createHash("sha256").update(data).digest("hex");
  await fsp.writeFile(blobPath(dst, digest), data);
  return { mediaType, digest, size: data.length };
}

/**
 * Converts the OCI image layout at `srcDir` into a new layout at `dstDir` whose layers are
 * eStargz (or zstd:chunked with `format: "zstd"`).
 */
export async function convertOciLayout(
  srcDir: string,
  dstDir: string,
  opts: OciConvertOptions = {},
): Promise<OciConvertResult> {
  const { prioritizedFilesOf, ...layerOpts } = opts;
  await fsp.mkdir(path.join(dstDir, "blobs", "sha256"), { recursive: true });
  const converted = new Map<string, { desc: Descriptor; diffID: string }>();
  let layers = 0;
  const enc = new TextEncoder();
  const layerType = opts.format === "zstd"
    ? "application/vnd.oci.image.layer.v1.tar+zstd"
    : "application/vnd.oci.image.layer.v1.tar+gzip";

  const convertOne = async (layer: Descriptor): Promise<{ desc: Descriptor; diffID: string }> => {
    const done = converted.get(layer.digest);
    if (done) return done;
    const tmp = path.join(dstDir, "blobs", "sha256", `.tmp-${layer.digest.slice(7, 19)}`);
    const r = await convertLayer(blobPath(srcDir, layer.digest), tmp, {
      ...layerOpts,
      prioritizedFiles: prioritizedFilesOf?.(layer.digest) ?? layerOpts.prioritizedFiles,
    });
    await fsp.rename(tmp, blobPath(dstDir, r.digest));
    layers++;
    const desc: Descriptor = {
      mediaType: layerType,
      digest: r.digest,
      size: r.size,
      annotations: {
        ...(layer.annotations ?? {}),
        [TOC_DIGEST_ANNOTATION]: r.tocDigest,
        [UNCOMPRESSED_SIZE_ANNOTATION]: String(r.uncompressedSize),
      },
    };
    const out = { desc, diffID: r.diffID };
    converted.set(layer.digest, out);
    return out;
  };

  const copyBlob = async (d: Descriptor): Promise<void> => {
    await fsp.copyFile(blobPath(srcDir, d.digest), blobPath(dstDir, d.digest));
  };

  const convertManifest = async (d: Descriptor): Promise<Descriptor> => {
    const m = await readJson(Manifest, blobPath(srcDir, d.digest), "manifest");
    const config = await readJson(Config, blobPath(srcDir, m.config.digest), "config");
    const newLayers: Descriptor[] = [];
    const diffIDs = [...config.rootfs.diff_ids];
    let i = 0;
    for (const layer of m.layers) {
      if (LAYER_TYPES.has(layer.mediaType)) {
        const c = await convertOne(layer);
        newLayers.push(c.desc);
        diffIDs[i] = c.diffID;
      } else {
        await copyBlob(layer);
        newLayers.push(layer);
      }
      i++;
    }
    const newConfig = { ...config, rootfs: { ...config.rootfs, diff_ids: diffIDs } };
    const configDesc = await writeBlob(
      dstDir,
      m.config.mediaType,
      enc.encode(JSON.stringify(newConfig)),
    );
    const newManifest = {
      ...m,
      mediaType: m.mediaType === DOCKER_MANIFEST ? MT_MANIFEST : m.mediaType ?? MT_MANIFEST,
      config: configDesc,
      layers: newLayers,
    };
    const desc = await writeBlob(dstDir, MT_MANIFEST, enc.encode(JSON.stringify(newManifest)));
    return { ...d, mediaType: MT_MANIFEST, digest: desc.digest, size: desc.size };
  };

  const convertIndex = async (file: string): Promise<Descriptor[]> => {
    const index = await readJson(Index, file, "index");
    const out: Descriptor[] = [];
    for (const d of index.manifests) {
      if (d.mediaType === MT_MANIFEST || d.mediaType === DOCKER_MANIFEST) {
        out.push(await convertManifest(d));
      } else if (d.mediaType === MT_INDEX || d.mediaType === DOCKER_LIST) {
        const children = await convertIndex(blobPath(srcDir, d.digest));
        const nested = { schemaVersion: 2, mediaType: MT_INDEX, manifests: children };
        const desc = await writeBlob(dstDir, MT_INDEX, enc.encode(JSON.stringify(nested)));
        out.push({ ...d, mediaType: MT_INDEX, digest: desc.digest, size: desc.size });
      } else {
        await copyBlob(d);
        out.push(d);
      }
    }
    return out;
  };

  const manifests = await convertIndex(path.join(srcDir, "index.json"));
  await fsp.writeFile(
    path.join(dstDir, "index.json"),
    JSON.stringify({ schemaVersion: 2, mediaType: MT_INDEX, manifests }),
  );
  await fsp.writeFile(
    path.join(dstDir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  return { manifests, layers };
}
