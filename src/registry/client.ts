/**
 * `RegistryClient`: the one object the daemon and the CLI hold. It owns hosts configuration,
 * keychain, token cache, connection limits and retry policy, and offers manifest resolution,
 * verified blob fetches, lazy `RemoteBlob`s and pushes.
 */
import { createHash } from "node:crypto";
import type { Logger } from "../log/mod.ts";
import { log as rootLog } from "../log/mod.ts";
import {
  type BlobLocation,
  type BlobOptions,
  blobSize,
  DEFAULT_BLOB_OPTIONS,
  HttpRemoteBlob,
  locateByTail,
  type RemoteBlob,
  type ResolvedBlobOptions,
  resolveRedirect,
} from "./blob.ts";
import { type Digest, digestAlgorithm, isDigest, parseDigest } from "./digest.ts";
import {
  DigestMismatchError,
  InvalidReferenceError,
  NotFoundError,
  RegistryError,
} from "./errors.ts";
import { type RegistryHost, registryHosts, type RegistryHostsConfig } from "./hosts.ts";
import { dockerConfigKeychain, type Keychain } from "./keychain.ts";
import {
  type Descriptor,
  type FetchedManifest,
  formatPlatform,
  hostPlatform,
  type ImageConfig,
  type Manifest,
  MANIFEST_ACCEPT,
  parseImageConfig,
  parseManifest,
  type Platform,
  platformMatches,
  sha256Digest,
  verifyDigest,
} from "./manifest.ts";
import { formatReference, parseReference, type Reference } from "./reference.ts";
import { parseContentRange, readPrefix } from "./_multipart.ts";
import { drain, errorMessage, statusError, Transport } from "./_transport.ts";

/** Options of {@link RegistryClient}. */
export interface RegistryClientOptions {
  /** Mirrors and timeouts (`[resolver]`). */
  hosts?: RegistryHostsConfig;
  /** Range read behaviour and retry policy (`[blob]`). */
  blob?: BlobOptions;
  /** Where credentials come from (default: the docker config keychain). */
  keychain?: Keychain;
  /**
   * Bytes of a blob's end read to locate it for range reads (default 512 KiB): size, footer and
   * usually the whole TOC in one request; 0 keeps the older HEAD-then-tail sequence.
   */
  tailReadBytes?: number;
  /** Concurrent requests per host (default 32); more wait in line. */
  maxConcurrentRequestsPerHost?: number;
  userAgent?: string;
  log?: Logger;
}

/** An image resolved for one platform. */
export interface ResolvedImage {
  /** The reference as given, normalised. */
  ref: Reference;
  /** Digest of what the tag points to (an index or a manifest). */
  digest: Digest;
  mediaType: string;
  /** The index, when the reference names one. */
  index?: FetchedManifest;
  /** The platform's manifest. */
  manifestDigest: string;
  manifestMediaType: string;
  manifest: Manifest;
  manifestBytes: Uint8Array;
  platform?: Platform;
  config: ImageConfig;
  configBytes: Uint8Array;
  layers: Descriptor[];
}

/** Options of {@link RegistryClient.pushBlob}. */
export interface PushBlobOptions {
  /** Try a cross-repository mount from this repository of the same registry first. */
  mountFrom?: string;
  /** Upload in `PATCH` chunks of this many bytes instead of one `PUT`. */
  chunkSize?: number;
}

type RefInput = Reference | string;

/** Blobs are hashed as stored: no transparent decompression by `fetch`. */
const IDENTITY = { "accept-encoding": "identity" };

function toRef(ref: RefInput): Reference {
  return typeof ref === "string" ? parseReference(ref) : ref;
}

function pullScope(ref: Reference): string {
  return `repository:${ref.repository}:pull`;
}

function pushScope(ref: Reference): string {
  return `repository:${ref.repository}:pull,push`;
}

function base(host: RegistryHost, ref: Reference): string {
  return `${host.scheme}://${host.host}${host.path}/${ref.repository}`;
}

const TAG = /^[\w][\w.-]{0,127}$/;

/**
 * `…/blobs/<digest>`. The digest is parsed again although its type says it was: a cast or a
 * stored string must not turn a label like `../../etc/passwd` into a request path.
 */
function blobUrl(host: RegistryHost, ref: Reference, digest: Digest): string {
  return `${base(host, ref)}/blobs/${parseDigest(digest)}`;
}

/** `…/manifests/<digest or tag>`, with the same re-check as {@link blobUrl}. */
function manifestUrl(host: RegistryHost, ref: Reference, object: Digest | string): string {
  if (!isDigest(object) && !TAG.test(object)) {
    throw new InvalidReferenceError(`invalid tag ${JSON.stringify(object.slice(0, 200))}`);
  }
  return `${base(host, ref)}/manifests/${object}`;
}

/**
 * Covers footer and TOC of most layers (a TOC compresses to ~30-60 bytes per entry), and costs
 * less than a second round trip on links up to ~100 Mbit/s with 40 ms RTT.
 */
const DEFAULT_TAIL_READ_BYTES = 512 << 10;

/** The registry client. */
export class RegistryClient {
  readonly blobOptions: ResolvedBlobOptions;
  private readonly transport: Transport;
  private readonly singleRangeHosts = new Set<string>();
  /** Registry hosts that refused a suffix range: their blobs are located the older way. */
  private readonly noSuffixHosts = new Set<string>();
  private readonly tailReadBytes: number;

  constructor(private readonly opts: RegistryClientOptions = {}) {
    this.blobOptions = { ...DEFAULT_BLOB_OPTIONS, ...definedOnly(opts.blob ?? {}) };
    this.transport = new Transport(
      opts.keychain ?? dockerConfigKeychain(),
      this.blobOptions,
      opts.maxConcurrentRequestsPerHost ?? 32,
      opts.userAgent ?? "stargz",
      opts.log ?? rootLog,
    );
    this.tailReadBytes = opts.tailReadBytes ?? DEFAULT_TAIL_READ_BYTES;
  }

  /** The endpoints tried for `ref`'s registry, mirrors first. */
  hosts(ref: RefInput): RegistryHost[] {
    return registryHosts(toRef(ref).domain, this.opts.hosts);
  }

  /**
   * Runs `fn` against each host in turn (mirrors first); a failing mirror falls through to the
   * next host, the origin's failure is final.
   */
  private async onHosts<T>(
    ref: Reference,
    need: "pull" | "resolve",
    fn: (host: RegistryHost) => Promise<T>,
  ): Promise<T> {
    const hosts = this.hosts(ref).filter((h) => h.capabilities[need]);
    if (!hosts.length) {
      throw new RegistryError(
        `${ref.domain}: no configured host may ${need} (hosts.toml capabilities)`,
      );
    }
    for (const [i, host] of hosts.entries()) {
      try {
        return await fn(host);
      } catch (err) {
        if (i === hosts.length - 1) throw err;
        this.transport.log.warn("registry: host failed, trying the next one", {
          host: host.host,
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }
    throw new RegistryError(`no hosts for ${ref.domain}`);
  }

  /**
   * GET that follows redirects (without credentials or mirror headers on other hosts) and
   * hands the final answer to `read`; any status but 200/206 is an error.
   */
  private async getFollowing<T>(
    host: RegistryHost,
    scopes: string[],
    url: string,
    headers: Record<string, string>,
    what: string,
    read: (res: Response) => Promise<T>,
    retry = true,
  ): Promise<T> {
    let current = url;
    for (let hop = 0; hop < 6; hop++) {
      const r = await this.transport.send(
        { host, scopes },
        { method: "GET", url: current, headers, retry },
        async (res) => {
          const location = res.headers.get("location");
          if (res.status >= 300 && res.status < 400 && location) {
            await drain(res);
            return { redirect: new URL(location, current).href } as const;
          }
          if (res.status !== 200 && res.status !== 206) throw await statusError(res, what);
          return { redirect: undefined, value: await read(res) } as const;
        },
      );
      if (r.redirect === undefined) return r.value;
      current = r.redirect;
    }
    throw new RegistryError(`${what}: too many redirects`);
  }

  private getBytes(
    host: RegistryHost,
    scopes: string[],
    url: string,
    headers: Record<string, string>,
    what: string,
  ): Promise<{ bytes: Uint8Array; headers: Headers }> {
    return this.getFollowing(host, scopes, url, headers, what, async (res) => {
      if (res.status !== 200) throw await statusError(res, what);
      return { bytes: new Uint8Array(await res.arrayBuffer()), headers: res.headers };
    });
  }

  /** Fetches the manifest or index `ref` names (by digest when it has one) and verifies it. */
  async getManifest(refInput: RefInput): Promise<FetchedManifest> {
    const ref = toRef(refInput);
    const object = ref.digest ?? ref.tag ?? "latest";
    // A tag needs a host trusted to resolve it; content by digest can come from any puller.
    return await this.onHosts(ref, ref.digest ? "pull" : "resolve", async (host) => {
      const what = `manifest ${formatReference(ref)}`;
      const { bytes, headers } = await this.getBytes(
        host,
        [pullScope(ref)],
        manifestUrl(host, ref, object),
        { accept: MANIFEST_ACCEPT },
        what,
      );
      let digest = ref.digest;
      if (digest) {
        verifyDigest(bytes, digest, what);
      } else {
        digest = sha256Digest(bytes);
        const claimed = headers.get("docker-content-digest");
        if (claimed && claimed.startsWith("sha256:") && claimed !== digest) {
          throw new RegistryError(
            `${what}: Docker-Content-Digest ${claimed} but content is ${digest}`,
          );
        }
      }
      return parseManifest(bytes, digest, headers.get("content-type") ?? "");
    });
  }

  /** Fetches a whole blob and verifies it against `desc`. */
  async fetchBlob(
    refInput: RefInput,
    desc: { digest: Digest; size?: number },
  ): Promise<Uint8Array> {
    const ref = toRef(refInput);
    return await this.onHosts(ref, "pull", async (host) => {
      const what = `blob ${desc.digest}`;
      const { bytes } = await this.getBytes(
        host,
        [pullScope(ref)],
        blobUrl(host, ref, desc.digest),
        IDENTITY,
        what,
      );
      verifyDigest(bytes, desc.digest, what, desc.size);
      return bytes;
    });
  }

  /**
   * Bytes `[start, endExclusive)` of a blob with one range GET (redirects followed), e.g. to
   * probe a footer without opening a {@link RemoteBlob}.
   */
  async fetchBlobRange(
    refInput: RefInput,
    digest: Digest,
    start: number,
    endExclusive: number,
  ): Promise<Uint8Array> {
    const ref = toRef(refInput);
    if (endExclusive <= start) return new Uint8Array(0);
    const what = `blob ${digest} bytes ${start}-${endExclusive - 1}`;
    return await this.onHosts(ref, "pull", (host) =>
      this.getFollowing(
        host,
        [pullScope(ref)],
        blobUrl(host, ref, digest),
        { range: `bytes=${start}-${endExclusive - 1}`, "accept-encoding": "identity" },
        what,
        async (res) => {
          if (res.status === 200) {
            const all = await readPrefix(res.body ?? new Blob().stream(), endExclusive);
            return all.subarray(start);
          }
          const cr = parseContentRange(res.headers.get("content-range"));
          const got = new Uint8Array(await res.arrayBuffer());
          if (cr.start !== start || got.length !== endExclusive - start) {
            throw new RegistryError(`${what}: registry sent ${cr.start}-${cr.end}`);
          }
          return got;
        },
      ));
  }

  /**
   * Streams a whole blob into `sink` (e.g. a file), hashing on the way; rejects with
   * {@link DigestMismatchError} if it does not match `desc`. Not retried once bytes have been
   * written, since the sink cannot take them back.
   */
  async copyBlob(
    refInput: RefInput,
    desc: { digest: Digest; size?: number },
    sink: { write(chunk: Uint8Array): Promise<unknown> },
  ): Promise<void> {
    const ref = toRef(refInput);
    const algo = digestAlgorithm(desc.digest);
    const what = `blob ${desc.digest}`;
    await this.onHosts(ref, "pull", (host) =>
      this.getFollowing(
        host,
        [pullScope(ref)],
        blobUrl(host, ref, desc.digest),
        IDENTITY,
        what,
        async (res) => {
          if (res.status !== 200) throw await statusError(res, what);
          const hash = createHash(algo);
          let size = 0;
          try {
            for await (const chunk of res.body ?? new Blob().stream()) {
              hash.update(chunk);
              size += chunk.length;
              await sink.write(chunk);
            }
          } catch (err) {
            throw new RegistryError(`${what}: download broke off: ${errorMessage(err)}`);
          }
          const got = `${algo}:${hash.digest("hex")}`;
          if (got !== desc.digest || (desc.size !== undefined && size !== desc.size)) {
            throw new DigestMismatchError(`${what}: received ${got} (${size} bytes)`);
          }
        },
        false,
      ));
  }

  /**
   * Resolves `ref` for one platform (the host's by default): index → manifest → config, every
   * piece verified against its digest.
   */
  async resolve(refInput: RefInput, opts: { platform?: Platform } = {}): Promise<ResolvedImage> {
    const ref = toRef(refInput);
    const top = await this.getManifest(ref);
    let fetched = top;
    let platform: Platform | undefined;
    if (top.kind === "index") {
      const want = opts.platform ?? hostPlatform();
      const desc = top.index.manifests.find((m) => platformMatches(want, m.platform));
      if (!desc) {
        const have = top.index.manifests.map((m) => m.platform ? formatPlatform(m.platform) : "?");
        throw new NotFoundError(
          `${formatReference(ref)}: no manifest for ${formatPlatform(want)} (index has ${
            have.join(", ") || "none"
          })`,
        );
      }
      platform = desc.platform;
      fetched = await this.getManifest({ ...ref, digest: desc.digest });
      if (fetched.bytes.byteLength !== desc.size) {
        throw new RegistryError(`manifest ${desc.digest}: size differs from the index`);
      }
      if (fetched.kind !== "manifest") {
        throw new RegistryError(`manifest ${desc.digest}: nested index is not supported`);
      }
    }
    if (fetched.kind !== "manifest") throw new RegistryError("unreachable: not a manifest");
    const manifest = fetched.manifest;
    const configBytes = await this.fetchBlob(ref, manifest.config);
    const config = parseImageConfig(configBytes, manifest.config.digest);
    if (!platform && config.os && config.architecture) {
      platform = {
        os: config.os,
        architecture: config.architecture,
        ...(config.variant ? { variant: config.variant } : {}),
      };
    }
    return {
      ref,
      digest: top.digest,
      mediaType: top.mediaType,
      ...(top.kind === "index" ? { index: top } : {}),
      manifestDigest: fetched.digest,
      manifestMediaType: fetched.mediaType,
      manifest,
      manifestBytes: fetched.bytes,
      ...(platform ? { platform } : {}),
      config,
      configBytes,
      layers: manifest.layers,
    };
  }

  /**
   * Finds the blob on the first host that has it; with `withTail`, by one suffix range read that
   * also returns its last bytes, unless the host refused one before.
   */
  private async locateBlob(
    ref: Reference,
    digest: Digest,
    withTail = false,
  ): Promise<BlobLocation> {
    return await this.onHosts(ref, "pull", async (host) => {
      const scopes = [pullScope(ref)];
      const origin = blobUrl(host, ref, digest);
      if (withTail && this.tailReadBytes > 0 && !this.noSuffixHosts.has(host.host)) {
        const found = await locateByTail(
          this.transport,
          host,
          scopes,
          origin,
          this.tailReadBytes,
        );
        if (found.kind === "found") {
          return { host, blobUrl: origin, url: found.url, size: found.size, tail: found.tail };
        }
        this.transport.log.info("registry: suffix range refused, locating blobs by HEAD", {
          host: host.host,
          reason: found.reason,
        });
        this.noSuffixHosts.add(host.host);
        const size = await blobSize(this.transport, host, scopes, found.url);
        return { host, blobUrl: origin, url: found.url, size };
      }
      const url = await resolveRedirect(this.transport, host, scopes, origin);
      const size = await blobSize(this.transport, host, scopes, url);
      return { host, blobUrl: origin, url, size };
    });
  }

  /**
   * Opens `digest` of `ref`'s repository for range reads. The first host (mirrors first) that
   * serves it wins; its redirect is resolved here once, by the same suffix read that fetches the
   * blob's last bytes ({@link RemoteBlob.takeTail}).
   */
  async openBlob(
    refInput: RefInput,
    digest: Digest,
    opts: { size?: number } = {},
  ): Promise<RemoteBlob> {
    const ref = toRef(refInput);
    const location = await this.locateBlob(ref, digest, true);
    if (opts.size !== undefined && location.size !== opts.size) {
      throw new RegistryError(
        `blob ${digest}: registry says ${location.size} bytes, descriptor says ${opts.size}`,
      );
    }
    return new HttpRemoteBlob(digest, location, {
      transport: this.transport,
      options: this.blobOptions,
      singleRangeHosts: this.singleRangeHosts,
      locate: () => this.locateBlob(ref, digest),
      scopes: [pullScope(ref)],
    });
  }

  /** The origin host (pushes never go to mirrors). */
  private origin(ref: Reference): RegistryHost {
    const hosts = this.hosts(ref);
    return hosts[hosts.length - 1];
  }

  /** True when the registry already has `digest` in `ref`'s repository. */
  async hasBlob(refInput: RefInput, digest: Digest): Promise<boolean> {
    const ref = toRef(refInput);
    const host = this.origin(ref);
    return await this.transport.send(
      { host, scopes: [pushScope(ref)] },
      { method: "HEAD", url: blobUrl(host, ref, digest) },
      async (res) => {
        await drain(res);
        if (res.status === 200) return true;
        if (res.status === 404) return false;
        throw await statusError(res, `blob ${digest}`);
      },
    );
  }

  /**
   * Uploads `data` to `ref`'s repository unless it is there already: cross-repository mount
   * when `mountFrom` is given, then monolithic `PUT` or chunked `PATCH`es.
   */
  async pushBlob(
    refInput: RefInput,
    data: Uint8Array,
    opts: PushBlobOptions & { mediaType?: string } = {},
  ): Promise<Descriptor> {
    const ref = toRef(refInput);
    const digest = sha256Digest(data);
    const desc: Descriptor = {
      mediaType: opts.mediaType ?? "application/octet-stream",
      digest,
      size: data.byteLength,
    };
    if (await this.hasBlob(ref, digest)) return desc;
    const host = this.origin(ref);
    const scopes = [pushScope(ref)];
    if (opts.mountFrom && opts.mountFrom !== ref.repository) {
      scopes.push(`repository:${opts.mountFrom}:pull`);
    }
    const target = { host, scopes };
    const uploads = `${base(host, ref)}/blobs/uploads/`;
    const q = opts.mountFrom && opts.mountFrom !== ref.repository
      ? `?${new URLSearchParams({ mount: digest, from: opts.mountFrom })}`
      : "";
    const started = await this.transport.send(
      target,
      { method: "POST", url: uploads + q, retry: false },
      async (res) => {
        await drain(res);
        if (res.status === 201) return { mounted: true as const };
        if (res.status !== 202) throw await statusError(res, `blob upload to ${ref.repository}`);
        const location = res.headers.get("location");
        if (!location) throw new RegistryError("blob upload: no Location");
        return { mounted: false as const, location: new URL(location, uploads).href };
      },
    );
    if (started.mounted) return desc;
    let location = started.location;
    const chunk = opts.chunkSize && opts.chunkSize > 0 ? opts.chunkSize : 0;
    let putBody: Uint8Array | undefined = data;
    if (chunk && data.byteLength > 0) {
      for (let off = 0; off < data.byteLength; off += chunk) {
        const part = data.subarray(off, Math.min(off + chunk, data.byteLength));
        location = await this.transport.send(
          target,
          {
            method: "PATCH",
            url: location,
            retry: false,
            headers: {
              "content-type": "application/octet-stream",
              "content-range": `${off}-${off + part.byteLength - 1}`,
            },
            body: part,
          },
          async (res) => {
            await drain(res);
            if (res.status !== 202) throw await statusError(res, `blob chunk at ${off}`);
            const next = res.headers.get("location");
            return next ? new URL(next, location).href : location;
          },
        );
      }
      putBody = undefined;
    }
    const done = new URL(location);
    done.searchParams.set("digest", digest);
    await this.transport.send(
      target,
      {
        method: "PUT",
        url: done.href,
        retry: false,
        headers: { "content-type": "application/octet-stream" },
        ...(putBody ? { body: putBody } : {}),
      },
      async (res) => {
        if (res.status !== 201 && res.status !== 204) {
          throw await statusError(res, `blob upload ${digest}`);
        }
        await drain(res);
      },
    );
    return desc;
  }

  /**
   * Puts a manifest or index. `ref`'s tag (or digest) names it; returns its descriptor.
   */
  async pushManifest(
    refInput: RefInput,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<Descriptor> {
    const ref = toRef(refInput);
    const digest = sha256Digest(bytes);
    if (ref.digest && ref.digest !== digest) {
      throw new RegistryError(`manifest is ${digest}, reference pins ${ref.digest}`);
    }
    const host = this.origin(ref);
    const object = ref.tag ?? digest;
    await this.transport.send(
      { host, scopes: [pushScope(ref)] },
      {
        method: "PUT",
        url: manifestUrl(host, ref, object),
        headers: { "content-type": mediaType },
        body: bytes,
      },
      async (res) => {
        if (res.status !== 201 && res.status !== 200) {
          throw await statusError(res, `manifest put ${formatReference(ref)}`);
        }
        await drain(res);
      },
    );
    return { mediaType, digest, size: bytes.byteLength };
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
