/**
 * The little of a Kubernetes client the secrets keychain needs: a kubeconfig read the way
 * client-go reads it (current context → cluster and user; inline `-data` or files relative to the
 * kubeconfig; bearer `token`/`tokenFile`, client certificate, `exec` credential plugins of
 * `client.authentication.k8s.io/v1` and `v1beta1`; the cluster's CA), GETs of JSON, and watch
 * streams of newline-delimited JSON events.
 *
 * Why not `@kubernetes/client-node` (2.0.1, tried 2026-12-01 against test/_kube_api.ts): 62 MB
 * installed; on Bun its requests ignore the kubeconfig's CA (SELF_SIGNED_CERT_IN_CHAIN), on Deno
 * it sends no client certificate (401) and its watch ended in a timeout. Plain `fetch` with
 * {@link fetchWithTls} does all three on both runtimes and in the compiled binary.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { fetchWithTls, type TlsFetch, type TlsOptions } from "../runtime/mod.ts";

/** A kubeconfig that cannot be used, or an API server that refuses us; the message says why. */
export class KubeError extends Error {
  override name = "KubeError";
}

const ExecConfig = v.object({
  apiVersion: v.picklist([
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
  ]),
  command: v.string(),
  args: v.optional(v.nullable(v.array(v.string())), []),
  env: v.optional(v.nullable(v.array(v.object({ name: v.string(), value: v.string() }))), []),
});
type ExecConfig = v.InferOutput<typeof ExecConfig>;

const Kubeconfig = v.object({
  clusters: v.array(v.object({
    name: v.string(),
    cluster: v.object({
      server: v.string(),
      "certificate-authority": v.optional(v.string()),
      "certificate-authority-data": v.optional(v.string()),
      "insecure-skip-tls-verify": v.optional(v.boolean()),
    }),
  })),
  users: v.optional(
    v.nullable(v.array(v.object({
      name: v.string(),
      user: v.object({
        token: v.optional(v.string()),
        tokenFile: v.optional(v.string()),
        "client-certificate": v.optional(v.string()),
        "client-certificate-data": v.optional(v.string()),
        "client-key": v.optional(v.string()),
        "client-key-data": v.optional(v.string()),
        exec: v.optional(ExecConfig),
      }),
    }))),
    [],
  ),
  contexts: v.array(v.object({
    name: v.string(),
    context: v.object({ cluster: v.string(), user: v.optional(v.string()) }),
  })),
  "current-context": v.string(),
});

const ExecCredential = v.object({
  status: v.object({
    token: v.optional(v.string()),
    clientCertificateData: v.optional(v.string()),
    clientKeyData: v.optional(v.string()),
    expirationTimestamp: v.optional(v.string()),
  }),
});

/** Where and how to talk to the API server. */
export interface KubeTarget {
  server: string;
  ca?: string;
  cert?: string;
  key?: string;
  token?: string;
  tokenFile?: string;
  exec?: ExecConfig;
}

const pem = (b64: string) => Buffer.from(b64, "base64").toString("utf8");

/** Reads a kubeconfig file into the target of its current context. */
export async function loadKubeconfig(file: string): Promise<KubeTarget> {
  const dir = path.dirname(file);
  const rel = (p: string) => path.resolve(dir, p);
  let raw: unknown;
  try {
    raw = parseYaml(await fs.readFile(file, "utf8"));
  } catch (err) {
    throw new KubeError(`kubeconfig ${file}: ${(err as Error).message}`);
  }
  const parsed = v.safeParse(Kubeconfig, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const at = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    throw new KubeError(`kubeconfig ${file}: ${at}: ${issue.message}`);
  }
  const kc = parsed.output;
  const ctx = kc.contexts.find((c) => c.name === kc["current-context"]);
  if (!ctx) throw new KubeError(`kubeconfig ${file}: no context "${kc["current-context"]}"`);
  const cluster = kc.clusters.find((c) => c.name === ctx.context.cluster)?.cluster;
  if (!cluster) throw new KubeError(`kubeconfig ${file}: no cluster "${ctx.context.cluster}"`);
  if (cluster["insecure-skip-tls-verify"]) {
    throw new KubeError(
      `kubeconfig ${file}: insecure-skip-tls-verify is not supported; give the cluster's CA`,
    );
  }
  const user = (kc.users ?? []).find((u) => u.name === ctx.context.user)?.user ?? {};
  const read = (p: string) => fs.readFile(rel(p), "utf8");
  const t: KubeTarget = { server: cluster.server.replace(/\/+$/, "") };
  try {
    if (cluster["certificate-authority-data"]) t.ca = pem(cluster["certificate-authority-data"]);
    else if (cluster["certificate-authority"]) t.ca = await read(cluster["certificate-authority"]);
    if (user["client-certificate-data"]) t.cert = pem(user["client-certificate-data"]);
    else if (user["client-certificate"]) t.cert = await read(user["client-certificate"]);
    if (user["client-key-data"]) t.key = pem(user["client-key-data"]);
    else if (user["client-key"]) t.key = await read(user["client-key"]);
  } catch (err) {
    throw new KubeError(`kubeconfig ${file}: ${(err as Error).message}`);
  }
  if (user.token) t.token = user.token;
  if (user.tokenFile) t.tokenFile = rel(user.tokenFile);
  if (user.exec) t.exec = user.exec;
  return t;
}

/** Runs an exec credential plugin (client-go's protocol: `KUBERNETES_EXEC_INFO` in, JSON out). */
function runExecPlugin(exec: ExecConfig): Promise<v.InferOutput<typeof ExecCredential>["status"]> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      KUBERNETES_EXEC_INFO: JSON.stringify({
        apiVersion: exec.apiVersion,
        kind: "ExecCredential",
        spec: { interactive: false },
      }),
    };
    for (const e of exec.env ?? []) env[e.name] = e.value;
    const child = spawn(exec.command, exec.args ?? [], { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-500)));
    child.on("error", (e) => reject(new KubeError(`exec plugin ${exec.command}: ${e.message}`)));
    child.on("close", (code) => {
      if (code !== 0) {
        return reject(new KubeError(`exec plugin ${exec.command}: exit ${code}: ${err.trim()}`));
      }
      try {
        resolve(v.parse(ExecCredential, JSON.parse(out)).status);
      } catch {
        reject(new KubeError(`exec plugin ${exec.command}: malformed ExecCredential`));
      }
    });
  });
}

/** One event of a watch stream. */
export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: unknown;
}

/** The part of a `Status` object (the API server's error body) shown in our errors. */
const StatusMessage = v.object({ message: v.string() });

const WatchEventSchema = v.object({
  type: v.picklist(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]),
  object: v.unknown(),
});

/** The TLS settings of a kubeconfig target: its CA and, when it has one, a client pair. */
function kubeTls(ca?: string, cert?: string, key?: string): TlsOptions {
  return { ...(ca ? { ca: [ca] } : {}), ...(cert && key ? { client: { cert, key } } : {}) };
}

/** A client for one API server (one kubeconfig target). */
export class KubeClient {
  private readonly http: TlsFetch;
  private execToken: { token: string; expiresAt: number } | undefined;
  private execTls: TlsFetch | undefined;

  constructor(private readonly target: KubeTarget) {
    this.http = fetchWithTls(kubeTls(target.ca, target.cert, target.key));
  }

  private async bearer(): Promise<string | undefined> {
    if (this.target.token) return this.target.token;
    if (this.target.tokenFile) {
      // Re-read each time: projected service account tokens are rotated in place.
      return (await fs.readFile(this.target.tokenFile, "utf8")).trim();
    }
    if (!this.target.exec) return undefined;
    if (this.execToken && this.execToken.expiresAt > Date.now()) return this.execToken.token;
    const status = await runExecPlugin(this.target.exec);
    if (status.clientCertificateData && status.clientKeyData && !this.execTls) {
      this.execTls = fetchWithTls(
        kubeTls(this.target.ca, status.clientCertificateData, status.clientKeyData),
      );
    }
    if (!status.token) return undefined;
    const exp = status.expirationTimestamp ? Date.parse(status.expirationTimestamp) : NaN;
    this.execToken = {
      token: status.token,
      expiresAt: Number.isFinite(exp) ? exp : Number.POSITIVE_INFINITY,
    };
    return status.token;
  }

  private async request(pathAndQuery: string, signal?: AbortSignal): Promise<Response> {
    for (let attempt = 0;; attempt++) {
      const token = await this.bearer();
      const headers: Record<string, string> = { accept: "application/json" };
      if (token) headers.authorization = `Bearer ${token}`;
      const http = this.execTls ?? this.http;
      let res: Response;
      try {
        res = await http(`${this.target.server}${pathAndQuery}`, { headers, signal });
      } catch (err) {
        if (signal?.aborted) throw err;
        throw new KubeError(
          `API server ${this.target.server}: ${(err as Error).message ?? String(err)}`,
        );
      }
      // An exec plugin's token may be revoked before its expiry: ask the plugin once more.
      if (res.status === 401 && this.target.exec && attempt === 0) {
        await res.body?.cancel();
        this.execToken = undefined;
        continue;
      }
      if (res.status !== 200) {
        const body = await res.text().catch(() => "");
        let message = body.slice(0, 200);
        try {
          const status = v.safeParse(StatusMessage, JSON.parse(body));
          if (status.success) message = status.output.message;
        } catch {
          // not JSON, so not a Status object
        }
        throw new KubeError(
          `API server ${this.target.server}: GET ${pathAndQuery.split("?")[0]}: ` +
            `HTTP ${res.status} ${message}`,
        );
      }
      return res;
    }
  }

  /** GETs a JSON document. */
  async get(pathAndQuery: string): Promise<unknown> {
    const res = await this.request(pathAndQuery);
    return await res.json();
  }

  /**
   * Streams the events of a watch (`pathAndQuery` with `watch=true`) to `onEvent` until the
   * server ends the stream, the connection drops (both resolve) or `signal` aborts.
   */
  async watch(
    pathAndQuery: string,
    onEvent: (ev: WatchEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const res = await this.request(pathAndQuery, signal);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          let json: unknown;
          try {
            json = JSON.parse(line);
          } catch {
            throw new KubeError("API server sent a watch event that is not JSON");
          }
          const parsed = v.safeParse(WatchEventSchema, json);
          if (!parsed.success) throw new KubeError("API server sent a malformed watch event");
          onEvent(parsed.output);
        }
      }
    } catch (err) {
      if (err instanceof KubeError || signal.aborted) throw err;
      // A dropped connection ends the watch like the server closing it: the caller re-watches.
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  close(): void {
    this.http.close();
    this.execTls?.close();
  }
}
