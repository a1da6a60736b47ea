/**
 * OCI and Docker schema 2 manifests, indexes and image configs (valibot schemas), digests, and
 * platform matching.
 */
import { createHash } from "node:crypto";
import * as v from "valibot";
import { type Digest, digestAlgorithm, DigestSchema } from "./digest.ts";
import { DigestMismatchError, RegistryError } from "./errors.ts";

/** The media types this client reads and writes. */
export const MediaType = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

/** `Accept` for manifest requests: all four manifest and index types. */
export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(", ");

const Platform = v.object({
  architecture: v.string(),
  os: v.string(),
  "os.version": v.optional(v.string()),
  "os.features": v.optional(v.array(v.string())),
  variant: v.optional(v.string()),
});
/** An OCI platform. */
export type Platform = v.InferOutput<typeof Platform>;

const DescriptorSchema = v.object({
  mediaType: v.string(),
  digest: DigestSchema,
  size: v.pipe(v.number(), v.integer(), v.minValue(0)),
  urls: v.optional(v.array(v.string())),
  annotations: v.optional(v.record(v.string(), v.string())),
  platform: v.optional(Platform),
  artifactType: v.optional(v.string()),
});
/** An OCI content descriptor. */
export type Descriptor = v.InferOutput<typeof DescriptorSchema>;

const ManifestSchema = v.object({
  schemaVersion: v.literal(2),
  mediaType: v.optional(v.string()),
  config: DescriptorSchema,
  layers: v.array(DescriptorSchema),
  annotations: v.optional(v.record(v.string(), v.string())),
  subject: v.optional(DescriptorSchema),
  artifactType: v.optional(v.string()),
});
/** An image manifest (OCI or Docker schema 2). */
export type Manifest = v.InferOutput<typeof ManifestSchema>;

const IndexSchema = v.object({
  schemaVersion: v.literal(2),
  mediaType: v.optional(v.string()),
  manifests: v.array(DescriptorSchema),
  annotations: v.optional(v.record(v.string(), v.string())),
});
/** An image index or Docker manifest list. */
export type Index = v.InferOutput<typeof IndexSchema>;

const ImageConfigSchema = v.looseObject({
  architecture: v.optional(v.string()),
  os: v.optional(v.string()),
  variant: v.optional(v.string()),
  rootfs: v.optional(v.looseObject({ type: v.string(), diff_ids: v.array(v.string()) })),
});
/** The parts of an image config this client looks at (other fields are kept). */
export type ImageConfig = v.InferOutput<typeof ImageConfigSchema>;

/** A manifest or index as fetched: bytes, digest, media type and the parsed form. */
export type FetchedManifest =
  & { digest: Digest; mediaType: string; bytes: Uint8Array }
  & ({ kind: "manifest"; manifest: Manifest } | { kind: "index"; index: Index });

/** `sha256:<hex>` of `data`. */
export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}` as Digest;
}

/** Throws {@link DigestMismatchError} unless `data` hashes to `digest` (and has `size`). */
export function verifyDigest(data: Uint8Array, digest: Digest, what: string, size?: number): void {
  const algo = digestAlgorithm(digest);
  const got = `${algo}:${createHash(algo).update(data).digest("hex")}`;
  if (got !== digest) throw new DigestMismatchError(`${what}: content is ${got}, want ${digest}`);
  if (size !== undefined && data.byteLength !== size) {
    throw new DigestMismatchError(`${what}: ${data.byteLength} bytes, want ${size}`);
  }
}

function parseJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new RegistryError(`${what} is not JSON`);
  }
}

/** Parses manifest or index bytes; `mediaType` is the Content-Type (may be empty). */
export function parseManifest(
  bytes: Uint8Array,
  digest: Digest,
  contentType: string,
): FetchedManifest {
  const json = parseJson(bytes, `manifest ${digest}`);
  const declared = typeof json === "object" && json !== null && "mediaType" in json &&
      typeof json.mediaType === "string"
    ? json.mediaType
    : "";
  const ct = contentType.split(";")[0].trim();
  const known = Object.values(MediaType) as string[];
  const mediaType = declared || (known.includes(ct) ? ct : "") ||
    (typeof json === "object" && json !== null && "manifests" in json
      ? MediaType.ociIndex
      : MediaType.ociManifest);
  const isIndex = mediaType === MediaType.ociIndex || mediaType === MediaType.dockerManifestList;
  if (isIndex) {
    const r = v.safeParse(IndexSchema, json);
    if (!r.success) throw new RegistryError(`index ${digest}: ${v.summarize(r.issues)}`);
    return { kind: "index", index: r.output, digest, mediaType, bytes };
  }
  if (mediaType !== MediaType.ociManifest && mediaType !== MediaType.dockerManifest) {
    throw new RegistryError(`manifest ${digest}: unsupported media type ${mediaType}`);
  }
  const r = v.safeParse(ManifestSchema, json);
  if (!r.success) throw new RegistryError(`manifest ${digest}: ${v.summarize(r.issues)}`);
  return { kind: "manifest", manifest: r.output, digest, mediaType, bytes };
}

/** Parses an image config. */
export function parseImageConfig(bytes: Uint8Array, digest: string): ImageConfig {
  const r = v.safeParse(ImageConfigSchema, parseJson(bytes, `config ${digest}`));
  if (!r.success) throw new RegistryError(`config ${digest}: ${v.summarize(r.issues)}`);
  return r.output;
}

const ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
  loong64: "loong64",
};

/** The platform of this host, as OCI names it (`linux/amd64`, `linux/arm64/v8`). */
export function hostPlatform(): Platform {
  const architecture = ARCH[process.arch] ?? process.arch;
  const os = process.platform === "win32" ? "windows" : process.platform;
  if (architecture === "arm64") return { os, architecture, variant: "v8" };
  if (architecture === "arm") return { os, architecture, variant: "v7" };
  return { os, architecture };
}

/** Parses `os/arch[/variant]`. */
export function parsePlatform(s: string): Platform {
  const [os, architecture, variant, extra] = s.split("/");
  if (!os || !architecture || extra !== undefined) {
    throw new RegistryError(`invalid platform "${s}" (want os/arch[/variant])`);
  }
  const normalisedArch = architecture === "x86_64"
    ? "amd64"
    : architecture === "aarch64"
    ? "arm64"
    : architecture;
  return { os, architecture: normalisedArch, ...(variant ? { variant } : {}) };
}

/** `os/arch[/variant]`. */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

function variantOf(p: Platform): string {
  if (p.variant) return p.variant;
  return p.architecture === "arm64" ? "v8" : p.architecture === "arm" ? "v7" : "";
}

/** True when an image for `have` runs on `want` (arm64 without variant is v8, arm is v7). */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  return !want.variant || variantOf(want) === variantOf(have);
}
