/**
 * Registry-to-registry conversion behind `stargz convert SRC_REF DST_REF`: pull the image (every
 * platform of an index, or one) into a temporary OCI layout, convert it with the eStargz
 * converter's {@link convertOciLayout}, and push the result.
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { convertOciLayout, type OciConvertOptions } from "../estargz/mod.ts";
import {
  type Descriptor,
  type FetchedManifest,
  formatPlatform,
  formatReference,
  InvalidReferenceError,
  MediaType,
  parseDigest,
  parseReference,
  type Platform,
  platformMatches,
  type Reference,
  RegistryClient,
  RegistryError,
  withObject,
} from "../registry/mod.ts";

/** What {@link convertImage} pushed. */
export interface ImageConvertResult {
  reference: string;
  digest: string;
  mediaType: string;
  size: number;
  /** Number of layers converted. */
  layers: number;
}

/**
 * True when `input` and `output` name images in registries rather than files: both parse as
 * references with an explicit registry host and `input` is not a path on disk.
 */
export async function looksLikeImageReferences(input: string, output: string): Promise<boolean> {
  const explicitHost = (s: string): boolean => {
    const first = s.split("/")[0];
    if (
      !s.includes("/") || !(first.includes(".") || first.includes(":") || first === "localhost")
    ) {
      return false;
    }
    try {
      parseReference(s);
      return true;
    } catch (err) {
      if (err instanceof InvalidReferenceError) return false;
      throw err;
    }
  };
  if (!explicitHost(input) || !explicitHost(output)) return false;
  return await fsp.stat(input).then(() => false, () => true);
}

const isIndex = (t: string) => t === MediaType.ociIndex || t === MediaType.dockerManifestList;
const isManifest = (t: string) => t === MediaType.ociManifest || t === MediaType.dockerManifest;

function blobFile(dir: string, digest: string): string {
  const [alg, hex] = digest.split(":");
  return path.join(dir, "blobs", alg, hex);
}

/** Writes `data` as a blob of the layout (once). */
async function putBlob(dir: string, digest: string, data: Uint8Array): Promise<void> {
  await fsp.mkdir(path.dirname(blobFile(dir, digest)), { recursive: true });
  await fsp.writeFile(blobFile(dir, digest), data);
}

async function pullInto(
  client: RegistryClient,
  ref: Reference,
  dir: string,
  fetched: FetchedManifest,
): Promise<void> {
  await putBlob(dir, fetched.digest, fetched.bytes);
  if (fetched.kind === "index") {
    for (const child of fetched.index.manifests) {
      if (isIndex(child.mediaType) || isManifest(child.mediaType)) {
        await pullInto(client, ref, dir, await client.getManifest(withObject(ref, child)));
      } else {
        await putBlob(dir, child.digest, await client.fetchBlob(ref, child));
      }
    }
    return;
  }
  const m = fetched.manifest;
  await putBlob(dir, m.config.digest, await client.fetchBlob(ref, m.config));
  for (const layer of m.layers) {
    const file = blobFile(dir, layer.digest);
    if (await fsp.stat(file).then(() => true, () => false)) continue;
    await fsp.mkdir(path.dirname(file), { recursive: true });
    // Layers stream to disk: an image's layers need not fit in memory.
    const fh = await fsp.open(file, "w");
    try {
      await client.copyBlob(ref, layer, { write: (chunk) => fh.write(chunk) });
    } finally {
      await fh.close();
    }
  }
}

async function pushFrom(
  client: RegistryClient,
  dst: Reference,
  dir: string,
  desc: Descriptor,
  tag: string | undefined,
  mountFrom: string | undefined,
): Promise<void> {
  const bytes = new Uint8Array(await fsp.readFile(blobFile(dir, desc.digest)));
  const json = JSON.parse(new TextDecoder().decode(bytes)) as {
    manifests?: Descriptor[];
    config?: Descriptor;
    layers?: Descriptor[];
  };
  if (isIndex(desc.mediaType)) {
    for (const child of json.manifests ?? []) {
      if (isIndex(child.mediaType) || isManifest(child.mediaType)) {
        await pushFrom(client, dst, dir, child, undefined, mountFrom);
      } else {
        const data = new Uint8Array(await fsp.readFile(blobFile(dir, child.digest)));
        await client.pushBlob(dst, data, { mountFrom });
      }
    }
  } else {
    for (const d of [json.config, ...(json.layers ?? [])]) {
      if (!d) continue;
      const data = new Uint8Array(await fsp.readFile(blobFile(dir, d.digest)));
      await client.pushBlob(dst, data, { mountFrom });
    }
  }
  const target = tag !== undefined
    ? withObject(dst, { tag })
    : withObject(dst, { digest: desc.digest });
  await client.pushManifest(target, bytes, desc.mediaType);
}

/**
 * Converts `src` into `dst`: every platform of an index (or only `platform`), every layer to
 * eStargz with `opts`. Blobs the conversion leaves unchanged are mounted from the source
 * repository when both are in the same registry.
 */
export async function convertImage(
  client: RegistryClient,
  src: string,
  dst: string,
  opts: OciConvertOptions & { platform?: Platform } = {},
): Promise<ImageConvertResult> {
  const srcRef = parseReference(src);
  const dstRef = parseReference(dst);
  if (dstRef.digest) throw new RegistryError(`destination ${dst} must name a tag, not a digest`);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "stargz-convert-"));
  try {
    const srcDir = path.join(tmp, "src");
    const dstDir = path.join(tmp, "dst");
    let top = await client.getManifest(srcRef);
    if (opts.platform && top.kind === "index") {
      const want = opts.platform;
      const child = top.index.manifests.find((m) => platformMatches(want, m.platform));
      if (!child) {
        throw new RegistryError(`${src}: no manifest for ${formatPlatform(want)}`);
      }
      top = await client.getManifest(withObject(srcRef, child));
    }
    await pullInto(client, srcRef, srcDir, top);
    await fsp.writeFile(
      path.join(srcDir, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [{ mediaType: top.mediaType, digest: top.digest, size: top.bytes.byteLength }],
      }),
    );
    await fsp.writeFile(
      path.join(srcDir, "oci-layout"),
      JSON.stringify({ imageLayoutVersion: "1.0.0" }),
    );
    const converted = await convertOciLayout(srcDir, dstDir, opts);
    const result = converted.manifests[0];
    if (!result) throw new RegistryError(`${src}: nothing to convert`);
    const mountFrom = srcRef.domain === dstRef.domain ? srcRef.repository : undefined;
    await pushFrom(
      client,
      dstRef,
      dstDir,
      { ...result, digest: parseDigest(result.digest) },
      dstRef.tag ?? "latest",
      mountFrom,
    );
    return {
      reference: formatReference(dstRef),
      digest: result.digest,
      mediaType: result.mediaType,
      size: result.size,
      layers: converted.layers,
    };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}
