import * as http from "node:http";
import * as v from "valibot";
import { formatBytes, type Status, StatusSchema } from "../service/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { configFromFlags } from "./_config.ts";
import { str } from "./_flags.ts";
import { adminAddress, DEFAULT_ADDRESS, DEFAULT_CONFIG } from "./serve.ts";

/** GETs `path` from the admin API at a unix socket path or `host:port`. */
function get(admin: string, path: string): Promise<string> {
  const target = admin.startsWith("/") ? { socketPath: admin, path } : (() => {
    const u = new URL(admin.includes("://") ? admin : `http://${admin}`);
    return { host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || 80), path };
  })();
  return new Promise((resolve, reject) => {
    http.get({ ...target, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        if (res.statusCode === 200) resolve(body);
        else reject(new Error(`${path}: HTTP ${res.statusCode}`));
      });
    }).on("error", reject).on("timeout", function (this: http.ClientRequest) {
      this.destroy(new Error("no answer within 10 s"));
    });
  });
}

const BAR = 20;

function bar(percent: number): string {
  const full = Math.round(Math.max(0, Math.min(100, percent)) / 100 * BAR);
  return `[${"#".repeat(full)}${".".repeat(BAR - full)}] ${percent.toFixed(1).padStart(5)}%`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join("  "));
}

/** The status as the table `stargz status` prints. */
function formatStatus(s: Status): string {
  const d = s.daemon;
  const out = [
    `stargz ${d.version}, pid ${d.pid}, up since ${d.startedAt}`,
    `config ${d.config}${d.configFound ? "" : " (absent: defaults)"}`,
    `root   ${d.root}`,
    `socket ${d.address}`,
  ];
  if (s.images.length === 0) out.push("", "no image layers prepared yet");
  for (const img of s.images) {
    out.push("", `IMAGE ${img.ref}`);
    const rows = [["  LAYER", "SIZE", "FETCHED", "MODE", "ERRORS"]];
    for (const l of img.layers) {
      rows.push([
        `  ${l.digest}`,
        l.size === undefined ? "-" : formatBytes(l.size),
        l.fetchedPercent === undefined ? "-" : bar(l.fetchedPercent),
        l.mode === "remote" ? "remote" : `fallback: ${l.reason ?? "?"}`,
        l.error ?? "",
      ]);
    }
    out.push(...table(rows).map((r) => r.trimEnd()));
  }
  const cache = s.cache;
  const c = (key: string): number => {
    const value = cache[key];
    return typeof value === "number" ? value : 0;
  };
  out.push(
    "",
    `CACHE disk ${formatBytes(c("diskBytes"))} (${c("diskChunks")} chunks), memory ${
      formatBytes(c("memoryBytes"))
    }; hits: memory ${c("memoryHits")}, disk ${c("diskHits")}; misses ${c("misses")}; evictions ${
      c("evictions")
    }`,
  );
  if (typeof cache.diskError === "string") out.push(`CACHE DISK ERROR ${cache.diskError}`);
  if (s.restore.failed.length === 0) {
    out.push(
      `RESTORE FAILURES none${
        s.restore.pending.length ? ` (${s.restore.pending.length} still restoring)` : ""
      }`,
    );
  } else {
    out.push(`RESTORE FAILURES ${s.restore.failed.length}`);
    for (const f of s.restore.failed) out.push(`  ${f.name} (${f.mountpoint}): ${f.error}`);
  }
  return out.join("\n") + "\n";
}

/** `stargz status`: the daemon's layers, fallbacks, cache and restore failures at a glance. */
export const statusCommand: Command = {
  name: "status",
  summary: "show each image's layers (lazy or fallback, fetched %), cache use and restore failures",
  usage: "[--json] [--watch] [--admin ADDRESS | --address SOCKET] [--config FILE]",
  flags: [
    { name: "json", kind: "bool", default: false, help: "print the status document as JSON" },
    { name: "watch", kind: "bool", default: false, help: "refresh until interrupted" },
    {
      name: "interval",
      kind: "int",
      default: 2,
      help: "seconds between refreshes with --watch",
      valueName: "SECONDS",
    },
    {
      name: "admin",
      kind: "string",
      help: "the admin API: a socket path or host:port (default: from the config)",
      valueName: "ADDRESS",
    },
    {
      name: "address",
      kind: "string",
      default: DEFAULT_ADDRESS,
      help: "the daemon's snapshotter socket (its admin.sock is beside it)",
      valueName: "SOCKET",
    },
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "the daemon's config file (for [admin] address)",
      valueName: "FILE",
    },
  ],
  async run(flags) {
    let admin = str(flags, "admin");
    if (!admin) {
      const configured = (await configFromFlags(flags)).admin.address;
      admin = adminAddress(configured, str(flags, "address") ?? DEFAULT_ADDRESS);
      if (!admin) throw new CommandError('the admin API is off ([admin] address = "off")', 1);
    }
    const once = async (): Promise<string> => {
      let body: string;
      try {
        body = await get(admin, "/v1/status");
      } catch (err) {
        throw new CommandError(`cannot reach the admin API at ${admin}: ${(err as Error).message}`);
      }
      let raw: unknown;
      try {
        raw = JSON.parse(body);
      } catch {
        throw new CommandError(`${admin}: /v1/status is not JSON`);
      }
      const parsed = v.safeParse(StatusSchema, raw);
      if (!parsed.success) throw new CommandError(`${admin}: unexpected /v1/status answer`);
      return flags.values.json === true
        ? JSON.stringify(parsed.output, null, 2) + "\n"
        : formatStatus(parsed.output);
    };
    if (flags.values.watch !== true) {
      process.stdout.write(await once());
      return 0;
    }
    const interval = Math.max(1, Number(flags.values.interval ?? 2)) * 1000;
    for (;;) {
      const text = await once().catch((err: Error) => `${err.message}\n`);
      process.stdout.write(
        `\x1b[H\x1b[2J${new Date().toISOString()}  (every ${interval / 1000} s)\n${text}`,
      );
      await new Promise((r) => setTimeout(r, interval));
    }
  },
};
