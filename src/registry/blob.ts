/**
 * `RemoteBlob`: random access to one blob in a registry by HTTP range requests, the way the
 * lazy filesystem reads eStargz layers. The redirect is resolved once and the final URL reused
 * for `valid_interval`; many ranges go in one multi-range request; 400 on a multi-range request
 * switches the host to single ranges; 403 re-resolves the URL.
 *
 * A blob is located with one suffix range GET (`Range: bytes=-N`) where the registry allows it:
 * its `Content-Range` gives the size, its body the footer and usually the whole TOC, and a
 * redirect on the way is resolved by that same request. Hosts that refuse suffix ranges get the
 * older sequence: a 2-byte GET for the redirect, a HEAD for the size, then the tail.
 */
import { RegistryError } from "./errors.ts";
import type { RegistryHost } from "./hosts.ts";
import {
  multipartBoundary,
  parseContentRange,
  readExact,
  readMultipart,
  readPrefix,
  type Segment,
} from "./_multipart.ts";
import { drain, errorMessage, RetryableError, statusError, type Transport } from "./_transport.ts";

/** The `[blob]` section the daemon fills from its configuration. */
export interface BlobOptions {
  /** Seconds a resolved (redirected) blob URL is reused before it is resolved again (60). */
  validIntervalSec?: number;
  /** Never send multi-range requests. */
  forceSingleRangeMode?: boolean;
  /** Retries after the first attempt (5). */
  maxRetries?: number;
  /** Smallest backoff in milliseconds (30). */
  minWaitMsec?: number;
  /** Largest backoff in milliseconds (300000). */
  maxWaitMsec?: number;
  /**
   * Deadline in seconds for one read, retries included (300); reads retry until it, past
   * `maxRetries`.
   */
  fetchingTimeoutSec?: number;
}

/** {@link BlobOptions} with every default filled in (upstream's values). */
export type ResolvedBlobOptions = Required<BlobOptions>;

/** Upstream defaults of the `[blob]` section. */
export const DEFAULT_BLOB_OPTIONS: ResolvedBlobOptions = {
  validIntervalSec: 60,
  forceSingleRangeMode: false,
  maxRetries: 5,
  minWaitMsec: 30,
  maxWaitMsec: 300_000,
  fetchingTimeoutSec: 300,
};

/** A byte range `[start, endExclusive)`. */
export type ByteRange = readonly [start: number, endExclusive: number];

/** Random read access to a blob in a registry (an eStargz `BlobReader`). */
export interface RemoteBlob {
  readonly digest: string;
  /** Size in bytes, from the registry. */
  readonly size: number;
  /** The URL ranges are currently read from (after redirects). */
  readonly url: string;
  /**
   * The blob's last bytes when locating it fetched them (a suffix range read), once: later calls
   * return undefined, so the bytes are not held for the life of the mount.
   */
  takeTail(): Uint8Array | undefined;
  /** Exactly bytes `[offset, offset+length)`; rejects with RangeError outside the blob. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Several ranges at once (one multi-range request where the server allows); same order. */
  readRanges(ranges: ReadonlyArray<ByteRange>): Promise<Uint8Array[]>;
  /** Checks the blob is still reachable (2-byte read; re-resolves the URL on 403). */
  check(): Promise<void>;
  /** Resolves the blob again through all hosts (mirrors first); the size must not change. */
  refresh(): Promise<void>;
}

/** Where a blob was found. */
export interface BlobLocation {
  host: RegistryHost;
  /** The registry URL `…/v2/<repo>/blobs/<digest>`. */
  blobUrl: string;
  /** Final URL after one redirect (equal to `blobUrl` when there was none). */
  url: string;
  size: number;
  /** The blob's last bytes, when the suffix read that located it returned them. */
  tail?: Uint8Array;
}

/** Requests with more ranges than this are split (servers limit header sizes). */
const MAX_RANGES_PER_REQUEST = 64;

type FetchOutcome =
  | { kind: "ok"; segments: Segment[] }
  | { kind: "refresh" }
  | { kind: "single" };

/** What a blob needs from its client. */
export interface BlobContext {
  transport: Transport;
  options: ResolvedBlobOptions;
  /** Hosts (by URL host) that refused multi-range requests. */
  singleRangeHosts: Set<string>;
  /** Finds the blob again: mirrors first, then the origin. */
  locate(): Promise<BlobLocation>;
  scopes: readonly string[];
}

/** Follows one redirect of `blobUrl` with a 2-byte GET (HEAD lies on some registries). */
export async function resolveRedirect(
  transport: Transport,
  host: RegistryHost,
  scopes: readonly string[],
  blobUrl: string,
): Promise<string> {
  return await transport.send(
    { host, scopes },
    { method: "GET", url: blobUrl, headers: { range: "bytes=0-1" } },
    async (res) => {
      const location = res.headers.get("location");
      if (res.status >= 200 && res.status < 300) {
        await drain(res);
        return blobUrl;
      }
      if (res.status >= 300 && res.status < 400 && location) {
        await drain(res);
        return new URL(location, blobUrl).href;
      }
      throw await statusError(res, `blob ${blobUrl}`);
    },
  );
}

/** What one suffix range read found: the blob, or why the host refused the suffix range. */
export type TailLocation =
  | { kind: "found"; url: string; size: number; tail: Uint8Array }
  | { kind: "refused"; url: string; reason: string };

type TailAnswer = TailLocation | { kind: "redirect"; url: string };

/**
 * Locates `blobUrl` with `GET Range: bytes=-tailBytes`, following one redirect: size from
 * `Content-Range`, the last bytes from the body. Answers that do not honour a suffix range (416,
 * 200 with more than the suffix, 206 without the total) are `refused`; a 200 body is aborted, not
 * read.
 */
export async function locateByTail(
  transport: Transport,
  host: RegistryHost,
  scopes: readonly string[],
  blobUrl: string,
  tailBytes: number,
): Promise<TailLocation> {
  const target = { host, scopes };
  const ask = (url: string): Promise<TailAnswer> =>
    transport.send<TailAnswer>(
      target,
      {
        method: "GET",
        url,
        headers: { range: `bytes=-${tailBytes}`, "accept-encoding": "identity" },
      },
      async (res) => {
        const location = res.headers.get("location");
        if (res.status >= 300 && res.status < 400 && location) {
          await drain(res);
          return { kind: "redirect", url: new URL(location, url).href };
        }
        const refused = async (reason: string): Promise<TailAnswer> => {
          await drain(res);
          return { kind: "refused", url, reason };
        };
        if (res.status === 416) return await refused("HTTP 416");
        if (res.status === 200) {
          // A blob no larger than the suffix may come whole; anything longer is the whole blob
          // in answer to a range the server ignored: abort it rather than download the layer.
          const len = Number(res.headers.get("content-length") ?? NaN);
          if (!Number.isSafeInteger(len) || len > tailBytes) {
            return await refused("HTTP 200 instead of 206");
          }
          return { kind: "found", url, size: len, tail: await readExact(res.body!, len) };
        }
        if (res.status === 206) {
          let cr: { start: number; end: number; total?: number };
          try {
            cr = parseContentRange(res.headers.get("content-range"));
          } catch {
            return await refused("no Content-Range");
          }
          if (cr.total === undefined || cr.end !== cr.total - 1) {
            return await refused(`Content-Range ${res.headers.get("content-range")}`);
          }
          const tail = await readExact(res.body!, cr.end - cr.start + 1);
          return { kind: "found", url, size: cr.total, tail };
        }
        throw await statusError(res, `blob ${url}`);
      },
    );
  const first = await ask(blobUrl);
  if (first.kind !== "redirect") return first;
  const second = await ask(first.url);
  // Storage that redirects again is left to the older sequence, which follows one hop too.
  return second.kind === "redirect"
    ? { kind: "refused", url: first.url, reason: "a second redirect" }
    : second;
}

/** Size of the blob at `url`: HEAD, else a 2-byte GET's Content-Range. */
export async function blobSize(
  transport: Transport,
  host: RegistryHost,
  scopes: readonly string[],
  url: string,
): Promise<number> {
  const target = { host, scopes };
  const head = await transport.send(target, { method: "HEAD", url }, async (res) => {
    await drain(res);
    const len = Number(res.headers.get("content-length") ?? NaN);
    return res.status === 200 && Number.isSafeInteger(len) ? len : undefined;
  });
  if (head !== undefined) return head;
  return await transport.send(
    target,
    { method: "GET", url, headers: { range: "bytes=0-1" } },
    async (res) => {
      if (res.status === 206) {
        await drain(res);
        const total = parseContentRange(res.headers.get("content-range")).total;
        if (total === undefined) throw new RegistryError(`blob ${url}: size unknown`);
        return total;
      }
      if (res.status === 200) {
        await drain(res);
        const len = Number(res.headers.get("content-length") ?? NaN);
        if (Number.isSafeInteger(len)) return len;
      }
      throw await statusError(res, `blob size of ${url}`);
    },
  );
}

/**
 * The one place where ranges are merged before they are asked for: overlapping and touching
 * ranges become one (the layer reader hands each extent as its own range and relies on this).
 */
function mergeRanges(ranges: ReadonlyArray<ByteRange>): [number, number][] {
  const sorted = ranges.filter(([s, e]) => e > s).map(([s, e]) => [s, e] as [number, number])
    .sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}

/** The {@link RemoteBlob} implementation. */
export class HttpRemoteBlob implements RemoteBlob {
  private location: BlobLocation;
  private resolvedAt = Date.now();
  private refreshing: Promise<void> | undefined;
  private tail: Uint8Array | undefined;

  constructor(
    readonly digest: string,
    { tail, ...location }: BlobLocation,
    private readonly ctx: BlobContext,
  ) {
    this.location = location;
    this.tail = tail;
  }

  takeTail(): Uint8Array | undefined {
    const t = this.tail;
    this.tail = undefined;
    return t;
  }

  get size(): number {
    return this.location.size;
  }

  get url(): string {
    return this.location.url;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const [out] = await this.readRanges([[offset, offset + length]]);
    return out;
  }

  async readRanges(ranges: ReadonlyArray<ByteRange>): Promise<Uint8Array[]> {
    for (const [s, e] of ranges) {
      if (
        !(Number.isSafeInteger(s) && Number.isSafeInteger(e) && s >= 0 && s <= e && e <= this.size)
      ) {
        throw new RangeError(`range [${s}, ${e}) outside blob of ${this.size} bytes`);
      }
    }
    const outputs: (Uint8Array | undefined)[] = ranges.map(() => undefined);
    const filled = ranges.map(() => 0);
    const merged = mergeRanges(ranges);
    if (merged.length === 0) return ranges.map(() => new Uint8Array(0));
    await this.revalidate();
    const deadline = AbortSignal.timeout(this.ctx.options.fetchingTimeoutSec * 1000);
    const batches: [number, number][][] = [];
    for (let i = 0; i < merged.length; i += MAX_RANGES_PER_REQUEST) {
      batches.push(merged.slice(i, i + MAX_RANGES_PER_REQUEST));
    }
    const segments = (await Promise.all(batches.map((b) => this.fetchRegions(b, deadline)))).flat();
    for (const seg of segments) {
      const segEnd = seg.start + seg.data.length;
      ranges.forEach(([s, e], i) => {
        const from = Math.max(s, seg.start);
        const to = Math.min(e, segEnd);
        if (to <= from) return;
        if (from === s && to === e) {
          // The segment holds the whole range: a view of it, not a copy.
          outputs[i] = seg.data.subarray(from - seg.start, to - seg.start);
        } else {
          outputs[i] ??= new Uint8Array(e - s);
          outputs[i]!.set(seg.data.subarray(from - seg.start, to - seg.start), from - s);
        }
        filled[i] += to - from;
      });
    }
    return ranges.map(([s, e], i) => {
      if (filled[i] < e - s) {
        throw new RegistryError(`blob ${this.digest}: registry did not send bytes ${s}-${e - 1}`);
      }
      return outputs[i] ?? new Uint8Array(0);
    });
  }

  private singleRange(): boolean {
    return this.ctx.options.forceSingleRangeMode ||
      this.ctx.singleRangeHosts.has(new URL(this.location.url).host);
  }

  private async fetchRegions(
    regions: [number, number][],
    deadline: AbortSignal,
    mayRefresh = true,
  ): Promise<Segment[]> {
    if (regions.length > 1 && this.singleRange()) {
      return (await Promise.all(regions.map((r) => this.fetchRegions([r], deadline, mayRefresh))))
        .flat();
    }
    const { host } = this.location;
    const url = this.location.url;
    const range = `bytes=${regions.map(([s, e]) => `${s}-${e - 1}`).join(",")}`;
    const maxEnd = regions[regions.length - 1][1];
    const outcome = await this.ctx.transport.send<FetchOutcome>(
      { host, scopes: this.ctx.scopes },
      {
        method: "GET",
        url,
        headers: { range, "accept-encoding": "identity" },
        signal: deadline,
        // A read waits out an outage up to fetching_timeout_sec rather than max_retries.
        untilDeadline: true,
      },
      async (res) => {
        if (res.status === 200) {
          // The server ignored Range and sends the whole blob: keep what was asked for.
          const data = await readPrefix(res.body ?? new Blob().stream(), maxEnd);
          if (data.length < maxEnd) throw new RetryableError("blob body ended early");
          return { kind: "ok", segments: [{ start: 0, data }] };
        }
        if (res.status === 206) {
          const boundary = multipartBoundary(res.headers.get("content-type"));
          if (boundary) {
            return { kind: "ok", segments: await readMultipart(res.body!, boundary) };
          }
          const { start, end } = parseContentRange(res.headers.get("content-range"));
          const data = await readExact(res.body!, end - start + 1);
          return { kind: "ok", segments: [{ start, data }] };
        }
        if (res.status === 403 && mayRefresh) {
          await drain(res);
          return { kind: "refresh" };
        }
        if (res.status === 400 && regions.length > 1 && !this.singleRange()) {
          await drain(res);
          return { kind: "single" };
        }
        throw await statusError(res, `blob ${this.digest} ranges ${range}`);
      },
    ).catch((err) => {
      if (err instanceof RegistryError) throw err;
      throw new RegistryError(`blob ${this.digest}: ${errorMessage(err)}`);
    });
    if (outcome.kind === "ok") return outcome.segments;
    if (outcome.kind === "refresh") {
      this.ctx.transport.log.info("registry: 403 on blob URL, resolving it again", {
        digest: this.digest,
      });
      await this.refreshUrl();
      return await this.fetchRegions(regions, deadline, false);
    }
    // Some storage back-ends (GCS in 2020) answer 400 to multi-range requests.
    this.ctx.transport.log.info("registry: multi-range request refused, using single ranges", {
      host: new URL(url).host,
    });
    this.ctx.singleRangeHosts.add(new URL(url).host);
    return await this.fetchRegions(regions, deadline, mayRefresh);
  }

  /** Re-resolves the redirect when the URL has been used longer than `valid_interval`. */
  private async revalidate(): Promise<void> {
    const l = this.location;
    if (l.url === l.blobUrl) return;
    if (Date.now() - this.resolvedAt < this.ctx.options.validIntervalSec * 1000) return;
    await this.refreshUrl();
  }

  private refreshUrl(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const l = this.location;
        const url = await resolveRedirect(this.ctx.transport, l.host, this.ctx.scopes, l.blobUrl);
        this.location = { ...l, url };
        this.resolvedAt = Date.now();
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  async check(): Promise<void> {
    const l = this.location;
    const status = await this.ctx.transport.send(
      { host: l.host, scopes: this.ctx.scopes },
      { method: "GET", url: l.url, headers: { range: "bytes=0-1" }, retry: false },
      async (res) => {
        await drain(res);
        return res.status;
      },
    );
    if (status === 200 || status === 206) return;
    if (status === 403) return await this.refreshUrl();
    throw new RegistryError(`blob ${this.digest}: check failed with HTTP ${status}`, status);
  }

  async refresh(): Promise<void> {
    const { tail: _, ...next } = await this.ctx.locate();
    if (next.size !== this.size) {
      throw new RegistryError(
        `blob ${this.digest}: size changed from ${this.size} to ${next.size} on refresh`,
      );
    }
    this.location = next;
    this.resolvedAt = Date.now();
  }
}
