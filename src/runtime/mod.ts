/**
 * The one place that knows which JavaScript runtime runs us. Everything else uses node:* APIs
 * that Bun and Deno both provide, and asks this module for the few things that differ.
 */

import * as https from "node:https";
import { Readable } from "node:stream";
import { libc } from "./_libc.ts";

/** The runtimes the source is written for. */
export type RuntimeName = "bun" | "deno" | "node";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

/** Which runtime executes this process. */
export function runtimeName(): RuntimeName {
  if (typeof g.Bun !== "undefined") return "bun";
  if (typeof g.Deno !== "undefined") return "deno";
  return "node";
}

/** The runtime's own version string, e.g. `bun 1.4.5`. */
export function runtimeVersion(): string {
  switch (runtimeName()) {
    case "bun":
      return `bun ${g.Bun.version}`;
    case "deno":
      return `deno ${g.Deno.version.deno}`;
    default:
      return `node ${process.versions.node}`;
  }
}

/** True when running as a `bun build --compile` executable. */
export function isCompiledBinary(): boolean {
  // Bun serves bundled sources from a virtual "/$bunfs/" filesystem inside compiled executables.
  return runtimeName() === "bun" && (process.argv[1] ?? "").startsWith("/$bunfs/");
}

/** The command-line arguments after the program (and script) name. */
export function programArgs(): string[] {
  return process.argv.slice(2);
}

/**
 * The name the program was invoked as (basename of argv[0] for a compiled binary, of the script
 * otherwise), so that a link named `containerd-stargz-grpc` can behave like the Go daemon.
 */
export function invokedName(): string {
  const first = isCompiledBinary() ? process.argv0 || process.execPath : process.argv[1] ?? "";
  const parts = first.split("/");
  return parts[parts.length - 1] ?? "";
}

/**
 * argv that runs the TypeScript file `script` with the current runtime (tests use it to start
 * the CLI from source): `bun script …` or `deno run -A script …`.
 */
export function scriptCommand(script: string, args: readonly string[] = []): string[] {
  if (runtimeName() === "deno") return [process.execPath, "run", "-A", script, ...args];
  return [process.execPath, script, ...args];
}

/**
 * True when {@link pollingReader} works here. Bun needs it: its fs thread pool has one thread per
 * CPU, so reads that block (e.g. on /dev/fuse) would starve every other async fs call of the
 * process. Deno runs blocking fs calls on a pool that grows to 512 threads and uses `fs.read`.
 */
export function hasPollingReader(): boolean {
  return runtimeName() === "bun";
}

/**
 * Successive read() results of `fd` (opened with O_NONBLOCK), driven by the runtime's poller so
 * that an idle fd holds no thread. Only where {@link hasPollingReader}; the fd stays open.
 */
export function pollingReader(fd: number): ReadableStreamDefaultReader<Uint8Array> {
  if (!hasPollingReader()) throw new Error(`no polling reader on ${runtimeName()}`);
  return g.Bun.file(fd).stream().getReader();
}

/** The part of `fetch` the registry client uses: a URL string and an init. */
export type FetchFn = (url: string, init: RequestInit) => Promise<Response>;

/** TLS settings of one registry host: extra CAs, client certificates, verification. */
export interface TlsOptions {
  /** PEM certificates trusted in addition to the system's. */
  ca?: readonly string[];
  /** PEM client certificate and key (the first pair is presented). */
  client?: { cert: string; key: string };
  /** Accept any server certificate (containerd's `skip_verify`). */
  skipVerify?: boolean;
}

/** A {@link FetchFn} bound to TLS settings; `close()` frees what the runtime holds for it. */
export type TlsFetch = FetchFn & { close(): void };

/**
 * A `fetch` that connects with `tls` (a TLS registry, a Kubernetes API server). Bun's fetch takes a `tls` option; Deno's takes an HTTP
 * client with CAs and a client certificate but cannot skip verification, so that case (and
 * Node) goes through `node:https`, which all three implement.
 */
export function fetchWithTls(tls: TlsOptions): TlsFetch {
  const none = { close: () => {} };
  const ca = tls.ca?.length ? [...tls.ca] : undefined;
  if (runtimeName() === "bun") {
    const options = {
      ...(ca ? { ca } : {}),
      ...(tls.client ? { cert: tls.client.cert, key: tls.client.key } : {}),
      ...(tls.skipVerify ? { rejectUnauthorized: false } : {}),
    };
    const f: FetchFn = (url, init) => fetch(url, { ...init, tls: options } as RequestInit);
    return Object.assign(f, none);
  }
  if (runtimeName() === "deno" && !tls.skipVerify) {
    const client = g.Deno.createHttpClient({
      ...(ca ? { caCerts: ca } : {}),
      ...(tls.client ? { cert: tls.client.cert, key: tls.client.key } : {}),
    });
    const f: FetchFn = (url, init) => fetch(url, { ...init, client } as RequestInit);
    return Object.assign(f, { close: () => client.close() });
  }
  const f: FetchFn = (url, init) =>
    httpsFetch(url, init, {
      ...(ca ? { ca } : {}),
      ...(tls.client ? { cert: tls.client.cert, key: tls.client.key } : {}),
      rejectUnauthorized: !tls.skipVerify,
    });
  return Object.assign(f, none);
}

/** `fetch` over `node:https` with TLS options; redirects are returned, not followed. */
function httpsFetch(
  url: string,
  init: RequestInit,
  tls: https.RequestOptions,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, key) => (headers[key] = value));
    const req = https.request(url, {
      ...tls,
      method: init.method ?? "GET",
      headers,
      ...(init.signal ? { signal: init.signal } : {}),
    }, (res) => {
      const out = new Headers();
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
        out.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
      }
      const status = res.statusCode ?? 502;
      const empty = init.method === "HEAD" || status === 204 || status === 304;
      if (empty) res.resume();
      const body = empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
      resolve(new Response(body, { status, statusText: res.statusMessage ?? "", headers: out }));
    });
    req.on("error", reject);
    const body = init.body;
    if (typeof body === "string" || body instanceof Uint8Array) req.end(body);
    else req.end();
  });
}

export { brokenFds, closeFd, LibcError, sendDatagram, setNonBlocking, takeFd } from "./_libc.ts";

/**
 * True when this process can call libc through the runtime's FFI: copy file descriptors out of
 * another process ({@link takeFd}), set O_NONBLOCK, and notify systemd ({@link sendDatagram}).
 * Bun and Deno (with `-A`) can; plain Node cannot.
 */
export function hasLibc(): boolean {
  return libc() !== null;
}

/**
 * argv that runs this same program again with `args`: the executable itself when compiled,
 * otherwise the runtime with the entry script this process was started from.
 */
export function selfCommand(args: readonly string[]): string[] {
  if (isCompiledBinary()) return [process.execPath, ...args];
  return scriptCommand(process.argv[1] ?? "", args);
}
