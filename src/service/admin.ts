/**
 * The admin HTTP API (hono), on by default on `admin.sock` beside the snapshotter socket (mode
 * 0600: root only), on TCP only when `[admin] address` says so: what the Go daemon never showed —
 * which layers are mounted lazily and how much of each is local, which fell back to a full pull
 * and why, cache use, restore failures.
 *
 *   GET /                   the status as a self-contained HTML page
 *   GET /healthz            200 "ok"
 *   GET /v1/status          the status document (`stargz status` reads it)
 *   GET /v1/layers          mounted layers with their state file content
 *   GET /v1/cache           chunk cache counters
 *   GET /v1/snapshots       snapshots with kind, parent and labels
 *   GET /v1/restore         remote snapshots still being restored after a restart, and those
 *                           that could not be (with the error)
 *   GET /v1/profiles        learned prefetch profiles (layer digest, file count, when recorded)
 *   GET /metrics            Prometheus text (off with `no_prometheus`); `metrics_address`
 *                           serves only this, on TCP, as the Go daemon does
 *
 * No route takes query parameters: each has a strict (empty) valibot schema for them, so a
 * request with any is answered 400 rather than silently served as if it had none.
 */
import { Hono } from "hono";
import * as fs from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as v from "valibot";
import type { Logger } from "../log/mod.ts";
import { METRICS, renderMetrics } from "../metrics/mod.ts";
import { type FallbackInput, groupByImage, type MountedInput, type Status } from "./_status.ts";
import { renderStatusPage } from "./_status_page.ts";
import { prepareSocketPath } from "./_socket.ts";

/** One mounted layer as the admin API shows it. */
export interface AdminLayer extends MountedInput {
  prefetchSize: number;
  /** Bytes local at the container's first read; the learned profile replayed or recorded. */
  startup?: unknown;
}

/** Where the admin API gets its numbers; every function is called per request. */
export interface AdminSources {
  daemon(): Status["daemon"];
  layers(): AdminLayer[];
  fallbacks(): readonly FallbackInput[];
  /** Counters, plus `diskError` (a string) when the disk part failed. */
  cache(): Record<string, number | string>;
  snapshots(): Promise<unknown[]>;
  restore(): Status["restore"];
  /** Learned prefetch profiles (none when the feature is off). */
  profiles?(): unknown[];
}

/** The query parameters every route accepts: none. */
const NoQuery = v.strictObject({});

/** The status document. */
export function statusOf(src: AdminSources): Status {
  return {
    daemon: src.daemon(),
    images: groupByImage(src.layers(), src.fallbacks()),
    cache: src.cache(),
    restore: src.restore(),
  };
}

/** The scrape-time families set from the sources, then every family as Prometheus text. */
export function metricsText(src: AdminSources): string {
  const layers = src.layers();
  for (const f of [METRICS.layerFetchedSize, METRICS.layerPrefetchSize, METRICS.layerSize]) {
    f.reset();
  }
  METRICS.layerFetchedBytes.reset();
  METRICS.layerErrors.reset();
  for (const l of layers) {
    const labels = { digest: l.digest, mountpoint: l.mountpoint };
    METRICS.layerFetchedSize.set(labels, l.state.fetchedSize);
    METRICS.layerPrefetchSize.set(labels, l.prefetchSize);
    METRICS.layerSize.set(labels, l.state.size);
    METRICS.layerFetchedBytes.set({ digest: l.digest }, l.state.fetchedSize);
    METRICS.layerErrors.set({ digest: l.digest }, l.state.error ? 1 : 0);
  }
  METRICS.layersMounted.set({}, layers.length);
  METRICS.restoreFailures.set({}, src.restore().failed.length);
  const cache = src.cache();
  const c = (key: string): number => {
    const value = cache[key];
    return typeof value === "number" ? value : 0;
  };
  METRICS.cacheBytes.set({ tier: "disk" }, c("diskBytes"));
  METRICS.cacheBytes.set({ tier: "memory" }, c("memoryBytes"));
  METRICS.cacheEvictions.set({}, c("evictions"));
  METRICS.cacheLookups.set({ result: "memory" }, c("memoryHits"));
  METRICS.cacheLookups.set({ result: "disk" }, c("diskHits"));
  METRICS.cacheLookups.set({ result: "miss" }, c("misses"));
  return renderMetrics();
}

const PROMETHEUS_TEXT = { "content-type": "text/plain; version=0.0.4; charset=utf-8" };

/** The hono application (exported for tests that call `app.request`). */
export function adminApp(src: AdminSources, opts: { metrics?: boolean } = {}): Hono {
  const app = new Hono();
  app.use(async (c, next) => {
    const r = v.safeParse(NoQuery, c.req.query());
    if (!r.success) {
      return c.json({ error: `unknown query parameter: ${v.summarize(r.issues)}` }, 400);
    }
    await next();
  });
  app.get("/", (c) => c.html(renderStatusPage(statusOf(src))));
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/v1/status", (c) => c.json(statusOf(src)));
  app.get("/v1/layers", (c) => c.json(src.layers()));
  app.get("/v1/cache", (c) => c.json(src.cache()));
  app.get("/v1/snapshots", async (c) => c.json(await src.snapshots()));
  app.get("/v1/restore", (c) => c.json(src.restore()));
  app.get("/v1/profiles", (c) => c.json(src.profiles?.() ?? []));
  if (opts.metrics !== false) {
    app.get("/metrics", (c) => c.text(metricsText(src), 200, PROMETHEUS_TEXT));
  }
  return app;
}

/** The app behind `metrics_address`: `/metrics` only. */
export function metricsApp(src: AdminSources): Hono {
  const app = new Hono();
  app.get("/metrics", (c) => c.text(metricsText(src), 200, PROMETHEUS_TEXT));
  return app;
}

/** A running HTTP server of the daemon. */
export interface AdminServer {
  /** `http://host:port` or the socket path. */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Serves `app` on a unix socket path (absolute; made 0600 before it is announced) or
 * `host:port`. `what` names the server in the log.
 */
export async function serveApp(
  address: string,
  app: Hono,
  log: Logger,
  what: string,
): Promise<AdminServer> {
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://admin");
      const response = await app.fetch(new Request(url, { method: req.method }));
      res.writeHead(response.status, Object.fromEntries(response.headers));
      res.end(new Uint8Array(await response.arrayBuffer()));
    } catch (err) {
      log.error(`${what} request failed`, { error: err });
      res.writeHead(500).end();
    }
  });
  const isSocket = address.startsWith("/");
  // A stale socket is replaced; a live one (another daemon) is refused, never taken over.
  if (isSocket) await prepareSocketPath(address);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (isSocket) server.listen(address, resolve);
    else {
      const i = address.lastIndexOf(":");
      server.listen(
        Number(address.slice(i + 1)),
        address.slice(0, i).replace(/^\[|\]$/g, ""),
        resolve,
      );
    }
  });
  // The API shows image names and registry errors: for root only, like the snapshotter socket.
  if (isSocket) await fs.chmod(address, 0o600);
  const shown = isSocket
    ? address
    : `http://${address.slice(0, address.lastIndexOf(":"))}:${
      (server.address() as AddressInfo).port
    }`;
  log.info(`${what} serving`, { address: shown });
  return {
    address: shown,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
        if (isSocket) fs.rm(address, { force: true }).catch(() => {});
      }),
  };
}

/** Serves the admin API on `address`. */
export function startAdmin(
  address: string,
  src: AdminSources,
  log: Logger,
  opts: { metrics?: boolean } = {},
): Promise<AdminServer> {
  return serveApp(address, adminApp(src, opts), log, "admin API");
}
