/**
 * The admin HTTP API (hono), on `[admin] address` (a unix socket path or `host:port`): what the
 * Go daemon never showed — which layers are mounted, how much of each is local, cache usage, the
 * last errors — as JSON, plus Prometheus text metrics.
 *
 *   GET /healthz            200 "ok"
 *   GET /v1/layers          mounted layers with their state file content
 *   GET /v1/cache           chunk cache counters
 *   GET /v1/snapshots       snapshots with kind, parent and labels
 *   GET /v1/restore         remote snapshots still being restored after a restart, and those
 *                           that could not be (with the error)
 *   GET /metrics            the same numbers in Prometheus text format (off with `no_prometheus`)
 */
import { Hono } from "hono";
import * as fs from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log/mod.ts";

/** One mounted layer as the admin API shows it. */
export interface AdminLayer {
  mountpoint: string;
  digest: string;
  state: {
    digest: string;
    size: number;
    fetchedSize: number;
    fetchedPercent: number;
    error?: string;
  };
}

/** Where the admin API gets its numbers; every function is called per request. */
export interface AdminSources {
  layers(): AdminLayer[];
  /** Counters, plus `diskError` (a string) when the disk part failed. */
  cache(): Record<string, number | string>;
  snapshots(): Promise<unknown[]>;
  restore(): { pending: string[]; failed: { name: string; mountpoint: string; error: string }[] };
}

/** The hono application (exported for tests that call `app.request`). */
export function adminApp(src: AdminSources, opts: { metrics?: boolean } = {}): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/v1/layers", (c) => c.json(src.layers()));
  app.get("/v1/cache", (c) => c.json(src.cache()));
  app.get("/v1/snapshots", async (c) => c.json(await src.snapshots()));
  app.get("/v1/restore", (c) => c.json(src.restore()));
  if (opts.metrics === false) return app;
  app.get("/metrics", (c) => {
    const lines: string[] = [];
    const metric = (name: string, help: string, type: string, samples: [string, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
    };
    const layers = src.layers();
    metric("stargz_layers_mounted", "Layers mounted through FUSE.", "gauge", [["", layers.length]]);
    const restore = src.restore();
    metric(
      "stargz_restore_failed",
      "Remote snapshots that could not be mounted again after a restart.",
      "gauge",
      [[
        "",
        restore.failed.length,
      ]],
    );
    metric(
      "stargz_layer_fetched_bytes",
      "Bytes of each layer blob fetched so far.",
      "gauge",
      layers.map((l) => [`{digest="${l.digest}"}`, l.state.fetchedSize]),
    );
    metric(
      "stargz_layer_size_bytes",
      "Size of each layer blob.",
      "gauge",
      layers.map((l) => [`{digest="${l.digest}"}`, l.state.size]),
    );
    metric(
      "stargz_layer_errors",
      "1 when the layer's state file reports an error.",
      "gauge",
      layers.map((l) => [`{digest="${l.digest}"}`, l.state.error ? 1 : 0]),
    );
    for (const [k, v] of Object.entries(src.cache())) {
      if (typeof v !== "number") continue;
      const name = `stargz_cache_${k.replace(/[A-Z]/g, (m) => "_" + m.toLowerCase())}`;
      metric(
        name,
        `Chunk cache ${k}.`,
        k.endsWith("Bytes") || k.endsWith("Chunks") ? "gauge" : "counter",
        [["", v]],
      );
    }
    return c.text(lines.join("\n") + "\n", 200, { "content-type": "text/plain; version=0.0.4" });
  });
  return app;
}

/** A running admin server. */
export interface AdminServer {
  /** `http://host:port` or the socket path. */
  readonly address: string;
  close(): Promise<void>;
}

/** Serves `app` on a unix socket path (absolute) or `host:port`. */
export async function startAdmin(
  address: string,
  src: AdminSources,
  log: Logger,
  opts: { metrics?: boolean } = {},
): Promise<AdminServer> {
  const app = adminApp(src, opts);
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://admin");
      const response = await app.fetch(new Request(url, { method: req.method }));
      res.writeHead(response.status, Object.fromEntries(response.headers));
      res.end(new Uint8Array(await response.arrayBuffer()));
    } catch (err) {
      log.error("admin request failed", { error: err });
      res.writeHead(500).end();
    }
  });
  const isSocket = address.startsWith("/");
  if (isSocket) await fs.rm(address, { force: true });
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
  const shown = isSocket
    ? address
    : `http://${address.slice(0, address.lastIndexOf(":"))}:${
      (server.address() as AddressInfo).port
    }`;
  log.info("admin API serving", { address: shown });
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
