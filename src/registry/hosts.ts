/**
 * Registry hosts: the ordered list of endpoints tried for one registry — configured mirrors
 * first, then the origin — with scheme, timeout and extra headers each.
 */
import { DOCKER_HUB } from "./reference.ts";

/** One `[[resolver.host."<registry>".mirrors]]` entry. */
export interface MirrorConfig {
  /** `host[:port]`, optionally with a path prefix (`mirror.example.com/v2-prefix`). */
  host: string;
  /** Plain HTTP instead of HTTPS. */
  insecure?: boolean;
  /** Per-request timeout; 0 or absent → the resolver default, negative → none. */
  requestTimeoutSec?: number;
  /** Extra request headers for this mirror. */
  header?: Record<string, string | readonly string[]>;
}

/** The `[resolver]` section the daemon fills from its configuration. */
export interface RegistryHostsConfig {
  /** Default per-request timeout in seconds (30 when absent; negative → none). */
  requestTimeoutSec?: number;
  /** Mirrors per registry host name (as written in references, e.g. `docker.io`). */
  host?: Record<string, { mirrors?: readonly MirrorConfig[]; plainHttp?: boolean }>;
}

/** One endpoint to try for a registry. */
export interface RegistryHost {
  /** `host[:port]` to connect to. */
  readonly host: string;
  readonly scheme: "http" | "https";
  /** Path prefix of the API, normally `/v2`. */
  readonly path: string;
  /** Per-request timeout in milliseconds; 0 means none. */
  readonly timeoutMs: number;
  /** Extra headers (mirror `header`), sent only to this host. */
  readonly headers: Readonly<Record<string, string>>;
  /** True for a configured mirror, false for the origin. */
  readonly isMirror: boolean;
}

/** Upstream's default per-request timeout. */
export const DEFAULT_REQUEST_TIMEOUT_SEC = 30;

/** True for `localhost`, `127.0.0.0/8` and `::1` (with or without port): plain HTTP by default. */
export function isLocalhost(host: string): boolean {
  let h = host;
  if (h.startsWith("[")) h = h.slice(1, h.indexOf("]"));
  else if (h.lastIndexOf(":") >= 0 && h.indexOf(":") === h.lastIndexOf(":")) {
    h = h.slice(0, h.lastIndexOf(":"));
  }
  if (h === "localhost" || h === "::1") return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && m.slice(1).every((o) => Number(o) <= 255);
}

function timeoutMs(sec: number | undefined, fallbackSec: number): number {
  if (sec === undefined || sec === 0) return fallbackSec < 0 ? 0 : fallbackSec * 1000;
  return sec < 0 ? 0 : sec * 1000;
}

function flattenHeaders(h: MirrorConfig["header"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    out[k.toLowerCase()] = typeof v === "string" ? v : v.join(", ");
  }
  return out;
}

/** The endpoints for registry `domain`, mirrors first, then the origin. */
export function registryHosts(domain: string, config: RegistryHostsConfig = {}): RegistryHost[] {
  const fallback = config.requestTimeoutSec ?? DEFAULT_REQUEST_TIMEOUT_SEC;
  const entry = config.host?.[domain];
  const entries: MirrorConfig[] = [
    ...(entry?.mirrors ?? []),
    { host: domain, insecure: entry?.plainHttp === true },
  ];
  return entries.map((m, i) => {
    const isMirror = i < entries.length - 1;
    let host = m.host.replace(/^https?:\/\//, "").replace(/\/+$/, "");
    let prefix = "";
    const slash = host.indexOf("/");
    if (slash >= 0) {
      prefix = host.slice(slash);
      host = host.slice(0, slash);
    }
    const plain = m.insecure === true || /^http:\/\//.test(m.host) || isLocalhost(host);
    if (host === DOCKER_HUB) host = "registry-1.docker.io";
    return {
      host,
      scheme: plain ? "http" : "https",
      path: `${prefix}/v2`,
      timeoutMs: timeoutMs(m.requestTimeoutSec, fallback),
      headers: isMirror ? flattenHeaders(m.header) : {},
      isMirror,
    };
  });
}
