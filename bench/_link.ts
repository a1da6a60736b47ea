/**
 * A shaped link to a registry: a network namespace of our own joined to the host by a veth pair
 * with a `tbf` qdisc on both ends for the rate, a second `docker-registry` inside it serving an
 * existing storage directory, and a userspace TCP forwarder on loopback that adds the delay
 * (this kernel has no `netem`). Only the registry's traffic crosses the veth, so nothing else on
 * the machine is shaped.
 *
 * ```ts
 * const link = await startShapedRegistry({ storage, rateMbit: 100, rttMs: 20 });
 * try {
 *   // pull from `${link.host}/repo:tag`
 * } finally {
 *   await link.stop();
 * }
 * ```
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Options of {@link startShapedRegistry}. */
export interface ShapedRegistryOptions {
  /** The filesystem storage directory of a registry that already holds the images. */
  storage: string;
  /** Rate of the veth in each direction (Mbit/s). */
  rateMbit: number;
  /** Round-trip time added by the forwarder (half each way, plus one RTT per new connection). */
  rttMs: number;
  /**
   * Receives the undo function before anything is created, so that an interrupted start can be
   * undone too (the function undoes whatever exists when it is called).
   */
  registerCleanup?: (stop: () => Promise<void>) => void;
}

/** A registry behind a shaped link, reached at `host` on loopback. */
export interface ShapedRegistry {
  /** `127.0.0.1:PORT` of the delaying forwarder: the host part of image references. */
  readonly host: string;
  /** `http://10.200.N.2:5000`: the registry itself across the veth (rate only, no delay). */
  readonly directUrl: string;
  /** How the link was built, for the report. */
  readonly description: string;
  /** Blob requests (GET or HEAD of `/v2/…/blobs/…`) sent through the link so far. */
  readonly blobRequests: number;
  stop(): Promise<void>;
}

/**
 * Counts HTTP request lines in a client's byte stream. GET and HEAD have no body, so every
 * request starts a line; a line split across chunks is joined from the carried tail.
 */
function requestLineCounter(onRequest: (line: string) => void): (d: Buffer) => void {
  let carry = "";
  return (d) => {
    const text = carry + d.toString("latin1");
    const lines = text.split("\r\n");
    carry = lines.pop()!.slice(-512);
    for (const l of lines) if (/^(GET|HEAD) \S+ HTTP\/1\.[01]$/.test(l)) onRequest(l);
  };
}

/** One direction of a forwarded connection: chunks leave `delayMs` after they arrived, in order. */
function pipeDelayed(src: net.Socket, dst: net.Socket, delayMs: number): void {
  const queue: { due: number; data: Buffer | null }[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let waitingForDrain = false;
  const flush = (): void => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0].due <= now + 0.5) {
      const { data } = queue.shift()!;
      if (data === null) {
        dst.end();
        return;
      }
      if (!dst.write(data) && !waitingForDrain) {
        waitingForDrain = true;
        src.pause();
        dst.once("drain", () => {
          waitingForDrain = false;
          src.resume();
        });
      }
    }
    if (queue.length > 0) timer = setTimeout(flush, queue[0].due - now);
  };
  const push = (data: Buffer | null): void => {
    queue.push({ due: performance.now() + delayMs, data });
    timer ??= setTimeout(flush, delayMs);
  };
  src.on("data", (d: Buffer) => push(d));
  src.on("end", () => push(null));
  src.on("error", () => dst.destroy());
  src.on("close", () => {
    if (queue.length === 0) dst.destroy();
  });
}

/**
 * A TCP forwarder on 127.0.0.1 to `target`: a new connection waits one RTT before it is joined
 * (the handshake a real link would cost), then every chunk waits half an RTT each way.
 */
async function startDelayForwarder(
  target: { host: string; port: number },
  rttMs: number,
  onRequest: (line: string) => void,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.once("close", () => sockets.delete(client));
    client.pause();
    client.on("error", () => client.destroy());
    setTimeout(() => {
      const upstream = net.connect(target.port, target.host);
      sockets.add(upstream);
      upstream.once("close", () => sockets.delete(upstream));
      upstream.setNoDelay(true);
      client.setNoDelay(true);
      client.on("data", requestLineCounter(onRequest));
      pipeDelayed(client, upstream, rttMs / 2);
      pipeDelayed(upstream, client, rttMs / 2);
      client.resume();
    }, rttMs);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A /30 in 10.200.0.0/16 that no interface of this machine uses yet. */
async function freeSubnet(): Promise<number> {
  const { stdout } = await run("ip", ["-o", "-4", "addr"]);
  for (let n = 100 + (process.pid % 100);; n = 100 + ((n - 99) % 150)) {
    if (!stdout.includes(`10.200.${n}.`)) return n;
  }
}

async function waitHttp(url: string, child: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0;; i++) {
    if (child.exitCode !== null) throw new Error(`registry in namespace exited: ${log()}`);
    const res = await fetch(url).catch(() => undefined);
    await res?.body?.cancel();
    if (res?.status === 200) return;
    if (i > 200) throw new Error(`registry in namespace does not answer: ${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Builds the namespace, veth, qdiscs, registry and forwarder; undoes everything on failure. */
export async function startShapedRegistry(opts: ShapedRegistryOptions): Promise<ShapedRegistry> {
  const tag = `sgzb${process.pid % 100000}`;
  const ns = `${tag}-ns`;
  const hostIf = `${tag}h`;
  const nsIf = `${tag}n`;
  const n = await freeSubnet();
  const hostIp = `10.200.${n}.1`;
  const nsIp = `10.200.${n}.2`;
  let dir: string | undefined;
  let registry: ChildProcess | undefined;
  let forwarder: Awaited<ReturnType<typeof startDelayForwarder>> | undefined;
  let blobRequests = 0;
  const stop = async (): Promise<void> => {
    await forwarder?.close();
    if (registry && registry.exitCode === null && registry.signalCode === null) {
      const exited = new Promise((r) => registry!.once("exit", r));
      registry.kill("SIGKILL");
      await exited;
    }
    await run("ip", ["link", "del", hostIf]).catch(() => {});
    await run("ip", ["netns", "del", ns]).catch(() => {});
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  };
  opts.registerCleanup?.(stop);
  const tbf = ["root", "tbf", "rate", `${opts.rateMbit}mbit`, "burst", "128kb", "latency", "50ms"];
  try {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-bench-link-"));
    await run("ip", ["netns", "add", ns]);
    await run("ip", ["link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    await run("ip", ["link", "set", nsIf, "netns", ns]);
    await run("ip", ["addr", "add", `${hostIp}/30`, "dev", hostIf]);
    await run("ip", ["link", "set", hostIf, "up"]);
    await run("ip", ["netns", "exec", ns, "ip", "addr", "add", `${nsIp}/30`, "dev", nsIf]);
    await run("ip", ["netns", "exec", ns, "ip", "link", "set", nsIf, "up"]);
    await run("ip", ["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
    await run("tc", ["qdisc", "add", "dev", hostIf, ...tbf]);
    await run("ip", ["netns", "exec", ns, "tc", "qdisc", "add", "dev", nsIf, ...tbf]);

    const config = path.join(dir, "config.yml");
    await fs.writeFile(
      config,
      [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        `    rootdirectory: ${opts.storage}`,
        "http:",
        `  addr: ${nsIp}:5000`,
        `  secret: ${crypto.randomUUID()}`,
      ].join("\n") + "\n",
    );
    registry = spawn("ip", ["netns", "exec", ns, "docker-registry", "serve", config], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    registry.stderr!.on("data", (d) => (log = (log + d).slice(-2000)));
    await waitHttp(`http://${nsIp}:5000/v2/`, registry, () => log);
    forwarder = await startDelayForwarder({ host: nsIp, port: 5000 }, opts.rttMs, (line) => {
      if (/^\S+ \/v2\/.*\/blobs\//.test(line)) blobRequests++;
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    host: `127.0.0.1:${forwarder.port}`,
    directUrl: `http://${nsIp}:5000`,
    description: `veth ${hostIf}<->${nsIf} (${hostIp}<->${nsIp}, netns ${ns}), ` +
      `tbf rate ${opts.rateMbit}mbit burst 128kb latency 50ms on both ends, ` +
      `forwarder 127.0.0.1:${forwarder.port} adding ${opts.rttMs / 2} ms each way ` +
      `and ${opts.rttMs} ms per new connection`,
    get blobRequests() {
      return blobRequests;
    },
    stop,
  };
}
