/**
 * The HTTP core shared by manifests, blobs and pushes: per-host concurrency limits, per-request
 * timeouts, authentication with one re-authentication on 401, and retries with exponential
 * backoff and jitter (honouring `Retry-After`) on connection errors, 429 and 5xx except 501.
 * Requests with an overall deadline may keep retrying until it (blob reads during an outage).
 *
 * The per-request timeout covers the wait for the response headers and then every pause in
 * the body, not the whole transfer: a registry that trickles a large range is slow, not dead,
 * and restarting the transfer would only make it slower.
 *
 * Requests go through the runtime's `fetch` with `redirect: "manual"`: both Bun and Deno pool
 * keep-alive connections behind it, and redirects must be seen to keep credentials and mirror
 * headers away from storage back-ends.
 */
import * as v from "valibot";
import type { Logger } from "../log/mod.ts";
import { log as rootLog } from "../log/mod.ts";
import { METRICS } from "../metrics/mod.ts";
import { type FetchFn, fetchWithTls, type TlsOptions } from "../runtime/mod.ts";
import { Authenticator } from "./auth.ts";
import { NotFoundError, RegistryError, TimeoutError, UnauthorizedError } from "./errors.ts";
import type { RegistryHost } from "./hosts.ts";
import type { Keychain } from "./keychain.ts";

/** Retry policy knobs (the `[blob]` retry keys of the configuration). */
export interface RetryPolicy {
  maxRetries: number;
  minWaitMsec: number;
  maxWaitMsec: number;
}

/** Who a request is for: the endpoint and the token scopes it needs. */
export interface RequestTarget {
  host: RegistryHost;
  scopes: readonly string[];
}

/** One HTTP request through {@link Transport.send}. */
export interface SendOptions {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** Retry on connection errors, 429 and 5xx (default true). */
  retry?: boolean;
  /** Overrides the host's per-request timeout (0: none). */
  timeoutMs?: number;
  /** Aborts everything, retries included (an overall deadline). */
  signal?: AbortSignal;
  /**
   * With `signal`: retry until it aborts instead of `max_retries` times, waiting at most
   * {@link UNTIL_DEADLINE_MAX_WAIT_MS} between attempts. A container blocked on an uncached
   * file then survives a registry outage shorter than the deadline, and notices the registry's
   * return within seconds.
   */
  untilDeadline?: boolean;
}

/** Longest wait between the attempts of an {@link SendOptions.untilDeadline} request. */
export const UNTIL_DEADLINE_MAX_WAIT_MS = 2000;

/** A FIFO counting semaphore. */
class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async acquire(): Promise<void> {
    if (this.active < this.max) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

/** Thrown by a consumer to ask for the request to be retried like a connection error. */
export class RetryableError extends Error {
  override name = "RetryableError";
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** True for statuses worth retrying: 429 and 5xx except 501 (like go-retryablehttp). */
export function retryableStatus(status: number): boolean {
  return status === 429 || (status >= 500 && status !== 501);
}

/** Delay before retry `attempt` (0-based): `Retry-After` if given, else exponential + jitter. */
export function backoffMs(attempt: number, policy: RetryPolicy, res?: Response): number {
  const ra = res && (res.status === 429 || res.status === 503)
    ? res.headers.get("retry-after")
    : null;
  if (ra) {
    const secs = /^\d+$/.test(ra.trim()) ? Number(ra) * 1000 : Date.parse(ra) - Date.now();
    // The server said when to come back: honour it even above max_wait_msec (like upstream).
    if (Number.isFinite(secs)) return Math.max(secs, 0);
  }
  const d = Math.min(policy.maxWaitMsec, policy.minWaitMsec * 2 ** attempt);
  // Jitter in [d, 2d) as upstream does, so that many clients do not come back in lockstep.
  return Math.min(d + Math.random() * d, Math.max(policy.maxWaitMsec, d));
}

const ErrorBody = v.object({
  errors: v.array(v.object({ code: v.optional(v.string()), message: v.optional(v.string()) })),
});

/** Reads a registry error body (`{"errors":[{code,message}]}`) into one short line. */
export async function describeFailure(res: Response): Promise<string> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    return `HTTP ${res.status}`;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return `HTTP ${res.status}`;
  }
  const parsed = v.safeParse(ErrorBody, json);
  const first = parsed.success ? parsed.output.errors[0] : undefined;
  if (!first) return `HTTP ${res.status}`;
  return `HTTP ${res.status} ${first.code ?? ""}: ${(first.message ?? "").slice(0, 200)}`;
}

/** The typed error for a final unexpected status. */
export async function statusError(res: Response, what: string): Promise<RegistryError> {
  const msg = `${what}: ${await describeFailure(res)}`;
  if (res.status === 404) return new NotFoundError(msg, 404);
  if (res.status === 401 || res.status === 403) return new UnauthorizedError(msg, res.status);
  return new RegistryError(msg, res.status);
}

/** Discards a response body so the connection can be reused. */
export async function drain(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // already consumed or broken: nothing to give back
  }
}

function hostOf(url: string): string {
  return new URL(url).host;
}

/** Everything the registry client shares across requests. */
export class Transport {
  readonly auth: Authenticator;
  private readonly limiters = new Map<string, Limiter>();
  /** One connection setup per TLS configuration (Deno's HTTP client holds a pool). */
  private readonly tlsFetches = new WeakMap<TlsOptions, FetchFn>();
  /** TLS settings by `host:port`, for token servers on a registry's own host. */
  private readonly tlsByHost = new Map<string, TlsOptions>();

  constructor(
    keychain: Keychain,
    readonly retry: RetryPolicy,
    private readonly maxPerHost: number,
    private readonly userAgent: string,
    readonly log: Logger = rootLog,
  ) {
    this.auth = new Authenticator(keychain, (url, init) => this.plainFetch(url, init, 30_000));
  }

  private limiter(host: string): Limiter {
    let l = this.limiters.get(host);
    if (!l) {
      l = new Limiter(this.maxPerHost);
      this.limiters.set(host, l);
    }
    return l;
  }

  /** The fetch for `host`: with its TLS settings when it has any. */
  private fetchFor(tls: TlsOptions | undefined): FetchFn {
    if (!tls) return fetch;
    let f = this.tlsFetches.get(tls);
    if (!f) {
      f = fetchWithTls(tls);
      this.tlsFetches.set(tls, f);
    }
    return f;
  }

  /** A fetch with a timeout and no auth, retries or redirects (token servers). */
  private async plainFetch(url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
    const signal = AbortSignal.timeout(timeoutMs);
    try {
      const res = await this.fetchFor(this.tlsByHost.get(hostOf(url)))(url, {
        ...init,
        headers: { "user-agent": this.userAgent, ...(init.headers as Record<string, string>) },
        signal,
        redirect: "follow",
      });
      const body = new Uint8Array(await res.arrayBuffer());
      return new Response(body, { status: res.status, headers: res.headers });
    } catch (err) {
      if (signal.aborted) throw new TimeoutError(`token request to ${hostOf(url)} timed out`);
      throw new RegistryError(`token request to ${hostOf(url)} failed: ${errorMessage(err)}`);
    }
  }

  /**
   * Sends one request and hands the response to `consume` (which must read or drain the body).
   * 401 re-authenticates once; retryable statuses and connection errors (also while
   * `consume` reads the body) are retried; any other status is passed to `consume`.
   */
  async send<T>(
    target: RequestTarget,
    opts: SendOptions,
    consume: (res: Response) => Promise<T>,
  ): Promise<T> {
    const reqHost = hostOf(opts.url);
    const sameHost = reqHost === target.host.host;
    const timeoutMs = opts.timeoutMs ?? target.host.timeoutMs;
    const retries = opts.retry === false ? 0 : this.retry.maxRetries;
    if (target.host.tls) this.tlsByHost.set(target.host.host, target.host.tls);
    // A redirect to another host (a storage back-end) gets neither credentials nor our TLS.
    const send = this.fetchFor(sameHost ? target.host.tls : undefined);
    const untilDeadline = opts.retry !== false && opts.untilDeadline === true &&
      opts.signal !== undefined;
    const policy = untilDeadline
      ? { ...this.retry, maxWaitMsec: Math.min(this.retry.maxWaitMsec, UNTIL_DEADLINE_MAX_WAIT_MS) }
      : this.retry;
    let reauthenticated = false;
    let lastFailure = "";
    for (let attempt = 0;; attempt++) {
      if (opts.signal?.aborted) throw deadlineError(opts, target, attempt, lastFailure);
      const headers: Record<string, string> = { "user-agent": this.userAgent };
      if (sameHost) {
        Object.assign(headers, target.host.headers);
        const authz = await this.auth.authorization(target.host.host, target.scopes);
        if (authz) headers.authorization = authz;
      }
      Object.assign(headers, opts.headers);
      const ctrl = new AbortController();
      let timedOut = false;
      const idle = new IdleTimer(timeoutMs, () => {
        timedOut = true;
        ctrl.abort(new TimeoutError("timeout"));
      });
      const onOuterAbort = () => ctrl.abort(opts.signal?.reason);
      opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
      const limiter = this.limiter(reqHost);
      await limiter.acquire();
      let res: Response | undefined;
      let failure: unknown;
      try {
        const started = performance.now();
        res = await send(opts.url, {
          method: opts.method,
          headers,
          body: opts.body as BodyInit | undefined,
          redirect: "manual",
          signal: ctrl.signal,
        }).catch((err) => {
          countRequest(reqHost, started, 0);
          throw err;
        });
        countRequest(reqHost, started, res.status);
        if (res.status === 401 && sameHost && !reauthenticated) {
          reauthenticated = true;
          const again = await this.auth.unauthorized(
            target.host.host,
            target.scopes,
            res.headers.get("www-authenticate"),
            headers.authorization,
          );
          if (again) {
            await drain(res);
            attempt--;
            continue;
          }
        }
        if (retryableStatus(res.status) && (untilDeadline || attempt < retries)) {
          this.#logRetry(reqHost, attempt, retries, untilDeadline, `HTTP ${res.status}`);
          lastFailure = `HTTP ${res.status}`;
          await drain(res);
          failure = res;
        } else {
          return await consume(idle.watch(res));
        }
      } catch (err) {
        if (err instanceof UnauthorizedError && sameHost && !err.explained) {
          throw err.withReason(await this.auth.explainRefusal(target.host.host, target.scopes));
        }
        if (err instanceof RegistryError && !(err instanceof TimeoutError)) throw err;
        if (opts.signal?.aborted) throw deadlineError(opts, target, attempt + 1, lastFailure);
        const error = timedOut
          ? new TimeoutError(
            `${opts.method} ${target.host.host}: no answer within ${timeoutMs} ms`,
          )
          : new RegistryError(
            `${opts.method} ${reqHost}: connection failed: ${errorMessage(err)}${tlsHint(err)}`,
            undefined,
            { cause: err },
          );
        // A certificate problem is the same on every attempt: say so at once.
        if ((!untilDeadline && attempt >= retries) || tlsHint(err)) throw error;
        lastFailure = error.message;
        this.#logRetry(reqHost, attempt, retries, untilDeadline, error.message);
        failure = error;
      } finally {
        idle.stop();
        opts.signal?.removeEventListener("abort", onOuterAbort);
        limiter.release();
      }
      try {
        await sleep(
          backoffMs(attempt, policy, failure instanceof Response ? failure : undefined),
          opts.signal,
        );
      } catch {
        throw deadlineError(opts, target, attempt + 1, lastFailure);
      }
    }
  }

  #logRetry(
    host: string,
    attempt: number,
    retries: number,
    untilDeadline: boolean,
    error: string,
  ): void {
    this.log.debug("registry: retrying", { host, attempt: attempt + 1, error });
    // Past max_retries only a deadline-bound read goes on: say once that it is waiting.
    if (untilDeadline && attempt === retries) {
      this.log.warn("registry unreachable; retrying until the read's deadline", {
        host,
        error,
      });
    }
  }
}

/** Registry request metrics: count by status (0: no response), latency, errors. */
function countRequest(host: string, startedMs: number, status: number): void {
  METRICS.registryRequests.add({ host, code: String(status) });
  METRICS.registryRequestDuration.observe({ host }, (performance.now() - startedMs) / 1000);
  if (status === 0 || status === 429 || status >= 500) METRICS.registryErrors.add({ host });
}

/** A pointer to the settings that fix a failed TLS handshake, when that is what failed. */
function tlsHint(err: unknown): string {
  const text = errorMessage(err) + String((err as { code?: unknown })?.code ?? "");
  return /certificate|CERT_|TLS|SSL|handshake|EPROTO|CertificateRequired/i.test(text)
    ? " (TLS: check the host's ca, client and skip_verify in certs.d/<host>/hosts.toml)"
    : "";
}

/**
 * The per-request timeout: fires when the response headers take longer than `ms`, or when the
 * body then pauses for longer than `ms` (a transfer that makes progress is never cut).
 */
class IdleTimer {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #last = Date.now();

  constructor(private readonly ms: number, private readonly onTimeout: () => void) {
    if (ms > 0) this.#arm(ms);
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => {
      // Re-arming on every body chunk would cost a timer per chunk: check the last one instead.
      const idleFor = Date.now() - this.#last;
      if (idleFor >= this.ms) this.onTimeout();
      else this.#arm(this.ms - idleFor);
    }, ms);
  }

  /** The response whose body reads count as progress (bodies of 200 and 206 only). */
  watch(res: Response): Response {
    this.#last = Date.now();
    if (this.ms <= 0 || !res.body || (res.status !== 200 && res.status !== 206)) return res;
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform: (chunk, out) => {
          this.#last = Date.now();
          out.enqueue(chunk);
        },
      }),
    );
    return new Response(body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
}

function deadlineError(
  opts: SendOptions,
  target: RequestTarget,
  attempts: number,
  lastFailure: string,
): TimeoutError {
  const last = lastFailure ? ` (last: ${lastFailure})` : "";
  return new TimeoutError(
    `${opts.method} ${target.host.host}: deadline exceeded after ${attempts} attempts${last}`,
  );
}

/** The message of an unknown thrown value, with its cause (fetch hides ECONNRESET there). */
export function errorMessage(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
}
