/**
 * Registry hosts: the ordered list of endpoints tried for one registry, with scheme, path,
 * timeout, extra headers, TLS settings and capabilities each. The order:
 *
 * 1. the daemon config's `[[resolver.host."<registry>".mirrors]]`, in file order;
 * 2. the `[host."…"]` tables of containerd's `certs.d/<registry>/hosts.toml`, in file order;
 * 3. the origin: hosts.toml's `server` (with its top-level TLS keys) or the registry itself.
 *
 * The snapshotter's own mirrors come first because they are the more specific setting: certs.d
 * is shared with containerd.
 */
import type { TlsOptions } from "../runtime/mod.ts";
import { DOCKER_HUB } from "./reference.ts";

/** What a host may be used for (containerd's `capabilities`). */
export interface HostCapabilities {
  /** Fetch blobs and manifests by digest. */
  pull: boolean;
  /** Resolve tags to digests. */
  resolve: boolean;
  /** Push (only the origin is pushed to). */
  push: boolean;
}

const ALL_CAPABILITIES: HostCapabilities = { pull: true, resolve: true, push: true };

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
  /** What the host may be used for (default: everything). */
  capabilities?: HostCapabilities;
  /** TLS settings (PEM contents already read). */
  tls?: TlsOptions;
  /** The path in `host` is the API root itself; `/v2` is not appended (hosts.toml). */
  overridePath?: boolean;
}

/** One registry's `certs.d/<registry>/hosts.toml` (or its docker-style certificate files). */
export interface HostsFile {
  /** The `[host."…"]` tables, in file order. */
  hosts: MirrorConfig[];
  /** The origin as `server` and the top-level keys describe it (host absent: the registry). */
  server: Omit<MirrorConfig, "host"> & { host?: string };
}

/** The `[resolver]` section the daemon fills from its configuration. */
export interface RegistryHostsConfig {
  /** Default per-request timeout in seconds (30 when absent; negative → none). */
  requestTimeoutSec?: number;
  /** Mirrors per registry host name (as written in references, e.g. `docker.io`). */
  host?: Record<string, { mirrors?: readonly MirrorConfig[]; plainHttp?: boolean }>;
  /**
   * containerd's certs.d directories as loaded, by directory name turned back into a registry
   * name (`host_port_` → `host:port`); `_default` applies to registries without their own.
   */
  hostsDir?: Record<string, HostsFile>;
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
  readonly capabilities: HostCapabilities;
  /** TLS settings, when the host has any. */
  readonly tls?: TlsOptions;
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

/** The endpoints for registry `domain` in the documented order, the origin last. */
export function registryHosts(domain: string, config: RegistryHostsConfig = {}): RegistryHost[] {
  const fallback = config.requestTimeoutSec ?? DEFAULT_REQUEST_TIMEOUT_SEC;
  const entry = config.host?.[domain];
  const file = config.hostsDir?.[domain] ?? config.hostsDir?.["_default"];
  const origin: MirrorConfig = {
    ...file?.server,
    host: file?.server.host ?? domain,
    ...(entry?.plainHttp ? { insecure: true } : {}),
  };
  const entries: MirrorConfig[] = [...(entry?.mirrors ?? []), ...(file?.hosts ?? []), origin];
  return entries.map((m, i) => {
    const isMirror = i < entries.length - 1;
    const scheme = /^(https?):\/\//.exec(m.host)?.[1];
    let host = m.host.replace(/^https?:\/\//, "").replace(/\/+$/, "");
    let prefix = "";
    const slash = host.indexOf("/");
    if (slash >= 0) {
      prefix = host.slice(slash).replace(/\/+/g, "/");
      host = host.slice(0, slash);
    }
    // An explicit scheme wins; otherwise localhost is plain HTTP, as in containerd.
    const plain = m.insecure === true || scheme === "http" ||
      (scheme === undefined && isLocalhost(host));
    if (host === DOCKER_HUB) host = "registry-1.docker.io";
    const path = m.overridePath ? prefix : prefix.endsWith("/v2") ? prefix : `${prefix}/v2`;
    return {
      host,
      scheme: plain ? "http" : "https",
      path,
      timeoutMs: timeoutMs(m.requestTimeoutSec, fallback),
      headers: flattenHeaders(m.header),
      isMirror,
      capabilities: m.capabilities ?? ALL_CAPABILITIES,
      ...(m.tls ? { tls: m.tls } : {}),
    };
  });
}
