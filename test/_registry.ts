/**
 * Test harness: a real CNCF distribution registry (Debian's `docker-registry`) on loopback with
 * its own temporary storage, in three set-ups — anonymous, htpasswd basic auth, and token auth
 * backed by a token server that signs real JWTs (RS256, x5c chain) with node:crypto — plus
 * helpers to push images (blobs, manifests, indexes) without going through `src/registry/`.
 *
 * Other test suites use it like this:
 * ```ts
 * const reg = await startRegistry({ auth: "token" });
 * try {
 *   const img = await pushImage(reg, "app", "v1", { layers: [{ data: tarGz }] });
 * } finally {
 *   await reg.stop();
 * }
 * ```
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, createPrivateKey, randomUUID, sign } from "node:crypto";
import * as fs from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import type { Digest } from "../src/registry/digest.ts";

/** How clients must authenticate to the test registry. */
export type RegistryAuthMode = "anonymous" | "basic" | "token";

/** Options for {@link startRegistry}. */
export interface TestRegistryOptions {
  /** Loopback port; 0 (default) lets the registry pick a free one. */
  port?: number;
  auth?: RegistryAuthMode;
  /** Accounts for basic/token auth (default `{ tester: "secret-pw" }`). */
  users?: Record<string, string>;
  /** Token auth: let clients without credentials pull (default true). */
  anonymousPull?: boolean;
  /** Serve HTTPS with this certificate; with `clientCa`, require client certificates it signed. */
  tls?: { cert: string; key: string; clientCa?: string };
  /** Serve this storage directory (another registry's `storage`) instead of a fresh one. */
  storage?: string;
}

/** One request the token server answered (for assertions). */
export interface TokenRequest {
  method: "GET" | "POST";
  account: string | undefined;
  scopes: string[];
  grantType?: string;
  status: number;
}

/** The JWT-signing token server of a token-auth registry. */
export interface TokenServer {
  /** Realm URL advertised in `WWW-Authenticate`. */
  readonly realm: string;
  /** `service` advertised in `WWW-Authenticate`. */
  readonly service: string;
  /** Every request answered so far, oldest first. */
  readonly requests: TokenRequest[];
  /**
   * Lifetime in seconds of the next tokens' JWT `exp` claim, measured from now (the registry
   * adds 60 s of leeway). The `expires_in` told to clients stays at `advertisedTtlSec`.
   */
  jwtTtlSec: number;
  /** `expires_in` sent to clients (default 300). */
  advertisedTtlSec: number;
  /** The refresh token the POST (oauth2) endpoint accepts and returns. */
  readonly refreshToken: string;
}

/** A running test registry; `stop()` kills it and removes its files. */
export interface TestRegistry {
  /** `127.0.0.1:PORT`, the host part of image references. */
  readonly host: string;
  readonly port: number;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly auth: RegistryAuthMode;
  readonly users: Record<string, string>;
  /** Temporary directory holding config, storage and credentials. */
  readonly dir: string;
  /** The storage directory it serves (for a second registry on the same content). */
  readonly storage: string;
  readonly tokenServer?: TokenServer;
  /** Authorization header value with push+pull rights on `repo` (undefined when anonymous). */
  authorization(repo: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

const DEFAULT_USERS = { tester: "secret-pw" };
const ISSUER = "stargz-test-issuer";
const SERVICE = "stargz-test-registry";

function b64url(data: Uint8Array | string): string {
  return Buffer.from(data).toString("base64url");
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited ${code}: ${err.trim()}`));
    });
  });
}

async function startTokenServer(
  dir: string,
  users: Record<string, string>,
  anonymousPull: boolean,
): Promise<{ server: TokenServer; certPath: string; close(): Promise<void> }> {
  const keyPath = path.join(dir, "token.key");
  const certPath = path.join(dir, "token.crt");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    keyPath,
    "-out",
    certPath,
    "-days",
    "2",
    "-subj",
    "/CN=stargz-test-token",
  ]);
  const key = createPrivateKey(await fs.readFile(keyPath));
  const certPem = await fs.readFile(certPath, "utf8");
  const certDer = certPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  const refreshToken = `refresh-${randomUUID()}`;

  const state: TokenServer = {
    realm: "",
    service: SERVICE,
    requests: [],
    jwtTtlSec: 300,
    advertisedTtlSec: 300,
    refreshToken,
  };

  const signJwt = (account: string, scopes: string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(":");
      const actions = rest.pop() ?? "";
      let granted = actions.split(",").filter(Boolean);
      if (!account) granted = anonymousPull ? granted.filter((a) => a === "pull") : [];
      return { type, name: rest.join(":"), actions: granted };
    });
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer] };
    const claims = {
      iss: ISSUER,
      sub: account,
      aud: SERVICE,
      exp: now + state.jwtTtlSec,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(sign("sha256", Buffer.from(input), key))}`;
  };

  const httpServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://x");
      const reply = (status: number, body: unknown, rec: Omit<TokenRequest, "status">) => {
        state.requests.push({ ...rec, status });
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.method === "POST") {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        const grantType = form.get("grant_type") ?? "";
        const scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
        let account: string | undefined;
        if (grantType === "password") {
          const u = form.get("username") ?? "";
          if (users[u] !== undefined && users[u] === form.get("password")) account = u;
        } else if (grantType === "refresh_token" && form.get("refresh_token") === refreshToken) {
          account = form.get("username") ?? Object.keys(users)[0];
        }
        const rec = { method: "POST" as const, account, scopes, grantType };
        if (!account) return reply(401, { error: "invalid_grant" }, rec);
        return reply(200, {
          access_token: signJwt(account, scopes),
          refresh_token: refreshToken,
          expires_in: state.advertisedTtlSec,
          issued_at: new Date().toISOString(),
        }, rec);
      }
      const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" "));
      let account: string | undefined;
      const authz = req.headers.authorization ?? "";
      const rec = () => ({ method: "GET" as const, account, scopes });
      if (authz.startsWith("Basic ")) {
        const [u, ...p] = Buffer.from(authz.slice(6), "base64").toString().split(":");
        if (users[u] === undefined || users[u] !== p.join(":")) {
          return reply(401, { errors: [{ code: "UNAUTHORIZED" }] }, rec());
        }
        account = u;
      }
      const token = signJwt(account ?? "", scopes);
      return reply(200, {
        token,
        access_token: token,
        expires_in: state.advertisedTtlSec,
        issued_at: new Date().toISOString(),
      }, rec());
    });
  });
  await new Promise<void>((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
  const port = (httpServer.address() as AddressInfo).port;
  (state as { realm: string }).realm = `http://127.0.0.1:${port}/token`;
  return {
    server: state,
    certPath,
    close: () =>
      new Promise<void>((resolve) => {
        httpServer.closeAllConnections?.();
        httpServer.close(() => resolve());
      }),
  };
}

function registryConfig(
  storage: string,
  port: number,
  authBlock: string,
  tls?: TestRegistryOptions["tls"],
): string {
  const tlsBlock = tls
    ? [
      "  tls:",
      `    certificate: ${tls.cert}`,
      `    key: ${tls.key}`,
      ...(tls.clientCa ? ["    clientcas:", `      - ${tls.clientCa}`] : []),
    ]
    : [];
  return [
    "version: 0.1",
    "log:",
    "  level: info",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${storage}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${randomUUID()}`,
    ...tlsBlock,
    authBlock,
  ].join("\n") + "\n";
}

/** Resolves with the port the registry reports listening on, or rejects if it exits first. */
function waitListening(child: ChildProcess, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(
      () => fail(new Error(`registry did not start: ${buf.slice(-500)}`)),
      timeoutMs,
    );
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (?:\[[^\]]*\]|[\d.]+):(\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        child.stderr?.off("data", onData);
        child.stderr?.resume();
        resolve(Number(m[1]));
      }
    };
    const onExit = (code: number | null) =>
      fail(new Error(`registry exited ${code}: ${buf.slice(-500)}`));
    function fail(e: Error) {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      reject(e);
    }
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  });
}

/** Starts `docker-registry` on 127.0.0.1 and waits until `/v2/` answers. */
export async function startRegistry(opts: TestRegistryOptions = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? "anonymous";
  const users = opts.users ?? DEFAULT_USERS;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-registry-"));
  let token: Awaited<ReturnType<typeof startTokenServer>> | undefined;
  let child: ChildProcess | undefined;
  const cleanup = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child!.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    }
    await token?.close();
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    let authBlock = "";
    if (auth === "basic") {
      const lines: string[] = [];
      for (const [u, p] of Object.entries(users)) {
        lines.push((await run("htpasswd", ["-Bbn", u, p])).trim());
      }
      const htpasswd = path.join(dir, "htpasswd");
      await fs.writeFile(htpasswd, lines.join("\n") + "\n");
      authBlock = `auth:\n  htpasswd:\n    realm: stargz-test\n    path: ${htpasswd}`;
    } else if (auth === "token") {
      token = await startTokenServer(dir, users, opts.anonymousPull ?? true);
      authBlock = [
        "auth:",
        "  token:",
        `    realm: ${token.server.realm}`,
        `    service: ${SERVICE}`,
        `    issuer: ${ISSUER}`,
        `    rootcertbundle: ${token.certPath}`,
      ].join("\n");
    }
    const configPath = path.join(dir, "config.yml");
    await fs.writeFile(
      configPath,
      registryConfig(
        opts.storage ?? path.join(dir, "storage"),
        opts.port ?? 0,
        authBlock,
        opts.tls,
      ),
    );
    child = spawn("docker-registry", ["serve", configPath], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    const port = await waitListening(child, 15_000);
    const url = `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`;
    // An HTTPS registry is ready once it listens: probing it would need its client certificate.
    for (let i = 0; !opts.tls; i++) {
      const res = await fetch(`${url}/v2/`).catch(() => undefined);
      await res?.body?.cancel();
      if (res && (res.status === 200 || res.status === 401)) break;
      if (i > 100) throw new Error("registry does not answer /v2/");
      await new Promise((r) => setTimeout(r, 50));
    }
    const [user, pass] = Object.entries(users)[0] ?? ["", ""];
    const basic = `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;
    const reg: TestRegistry = {
      host: `127.0.0.1:${port}`,
      port,
      url,
      auth,
      users,
      dir,
      storage: opts.storage ?? path.join(dir, "storage"),
      tokenServer: token?.server,
      authorization(repo) {
        if (auth === "anonymous") return Promise.resolve(undefined);
        if (auth === "basic") return Promise.resolve(basic);
        return (async () => {
          const q = new URLSearchParams({
            service: SERVICE,
            scope: `repository:${repo}:pull,push`,
          });
          const res = await fetch(`${token!.server.realm}?${q}`, {
            headers: { authorization: basic },
          });
          const body = (await res.json()) as { token: string };
          return `Bearer ${body.token}`;
        })();
      },
      stop: cleanup,
    };
    return reg;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** OCI media types the helpers use. */
export const MEDIA = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

/** An OCI descriptor. */
export interface TestDescriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
}

/** `sha256:<hex>` of `data`. */
export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}` as Digest;
}

/** Uploads one blob (monolithic POST + PUT) unless the registry already has it. */
export async function pushBlob(
  reg: TestRegistry,
  repo: string,
  data: Uint8Array,
): Promise<Digest> {
  const digest = sha256Digest(data);
  const authz = await reg.authorization(repo);
  const headers: Record<string, string> = authz ? { authorization: authz } : {};
  const head = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD", headers });
  await head.body?.cancel();
  if (head.status === 200) return digest;
  const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: "POST", headers });
  await start.body?.cancel();
  if (start.status !== 202) throw new Error(`blob upload start: HTTP ${start.status}`);
  const loc = new URL(start.headers.get("location") ?? "", reg.url);
  loc.searchParams.set("digest", digest);
  const put = await fetch(loc, {
    method: "PUT",
    headers: { ...headers, "content-type": "application/octet-stream" },
    body: data as BodyInit,
  });
  await put.body?.cancel();
  if (put.status !== 201) throw new Error(`blob upload: HTTP ${put.status}`);
  return digest;
}

/** Puts a manifest or index under `reference` (a tag or its digest); returns its digest. */
export async function pushManifest(
  reg: TestRegistry,
  repo: string,
  reference: string,
  mediaType: string,
  body: string,
): Promise<Digest> {
  const authz = await reg.authorization(repo);
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, {
    method: "PUT",
    headers: { ...(authz ? { authorization: authz } : {}), "content-type": mediaType },
    body,
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`manifest put: HTTP ${res.status} ${text}`);
  return sha256Digest(body);
}

/** One layer for {@link pushImage}. */
export interface TestLayer {
  data: Uint8Array;
  mediaType?: string;
  annotations?: Record<string, string>;
}

/** What {@link pushImage} uploaded. */
export interface PushedImage {
  /** `127.0.0.1:PORT/repo:tag`. */
  ref: string;
  manifestDigest: string;
  manifest: string;
  config: TestDescriptor;
  layers: TestDescriptor[];
}

/** Pushes config + layers + manifest (OCI by default, Docker schema 2 with `docker: true`). */
export async function pushImage(
  reg: TestRegistry,
  repo: string,
  tag: string,
  image: {
    layers: TestLayer[];
    config?: Record<string, unknown>;
    platform?: { os: string; architecture: string; variant?: string };
    docker?: boolean;
    annotations?: Record<string, string>;
  },
): Promise<PushedImage> {
  const platform = image.platform ?? { os: "linux", architecture: "amd64" };
  const layers: TestDescriptor[] = [];
  for (const l of image.layers) {
    const digest = await pushBlob(reg, repo, l.data);
    layers.push({
      mediaType: l.mediaType ?? (image.docker ? MEDIA.dockerLayerGzip : MEDIA.ociLayerGzip),
      digest,
      size: l.data.byteLength,
      ...(l.annotations ? { annotations: l.annotations } : {}),
    });
  }
  // diff_ids are digests of the uncompressed tars: containerd checks them when it unpacks.
  const diffIds = image.layers.map((l) =>
    sha256Digest(l.data[0] === 0x1f && l.data[1] === 0x8b ? zlib.gunzipSync(l.data) : l.data)
  );
  const configJson = JSON.stringify(
    image.config ?? {
      ...platform,
      rootfs: { type: "layers", diff_ids: diffIds },
      config: {},
    },
  );
  const configBytes = new TextEncoder().encode(configJson);
  const config: TestDescriptor = {
    mediaType: image.docker ? MEDIA.dockerConfig : MEDIA.ociConfig,
    digest: await pushBlob(reg, repo, configBytes),
    size: configBytes.byteLength,
  };
  const mediaType = image.docker ? MEDIA.dockerManifest : MEDIA.ociManifest;
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType,
    config,
    layers,
    ...(image.annotations ? { annotations: image.annotations } : {}),
  });
  const manifestDigest = await pushManifest(reg, repo, tag, mediaType, manifest);
  return { ref: `${reg.host}/${repo}:${tag}`, manifestDigest, manifest, config, layers };
}

/** Pushes an index (OCI, or a Docker manifest list with `docker: true`) over pushed manifests. */
export async function pushIndex(
  reg: TestRegistry,
  repo: string,
  tag: string,
  images: ReadonlyArray<{
    image: PushedImage;
    platform: { os: string; architecture: string; variant?: string };
  }>,
  opts: { docker?: boolean } = {},
): Promise<{ ref: string; digest: Digest; index: string }> {
  const mediaType = opts.docker ? MEDIA.dockerList : MEDIA.ociIndex;
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType,
    manifests: images.map(({ image, platform }) => ({
      mediaType: JSON.parse(image.manifest).mediaType,
      digest: image.manifestDigest,
      size: new TextEncoder().encode(image.manifest).byteLength,
      platform,
    })),
  });
  const digest = await pushManifest(reg, repo, tag, mediaType, index);
  return { ref: `${reg.host}/${repo}:${tag}`, digest, index };
}

/** `n` deterministic pseudo-random bytes (so range reads can be checked against the source). */
export function testBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** One request seen by a {@link FaultProxy}. */
export interface ProxiedRequest {
  method: string;
  /** Path and query. */
  url: string;
  headers: http.IncomingHttpHeaders;
  /** Status answered (set once the answer is sent; undefined while pending or hung). */
  status?: number;
  /** Body bytes of the upstream answer to a forwarded request. */
  bytes?: number;
}

/** What a {@link FaultProxy} does with one request. */
export type FaultAction =
  | {
    kind: "pass";
    /** Forward to this path instead. */
    path?: string;
    /** Replace request headers before forwarding (undefined removes one). */
    headers?: Record<string, string | undefined>;
  }
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string }
  | { kind: "redirect"; location: string; status?: number }
  | { kind: "reset-mid-body" }
  /** Forward, then send the body `bytes` at a time every `everyMs` (a slow registry). */
  | { kind: "trickle"; bytes: number; everyMs: number }
  | { kind: "hang" };

/** A loopback HTTP proxy in front of a registry that can misbehave on demand. */
export interface FaultProxy {
  readonly host: string;
  readonly url: string;
  readonly requests: ProxiedRequest[];
  /** Decides per request; the default passes everything through to the upstream. */
  rule: (req: ProxiedRequest, n: number) => FaultAction;
  /** TCP connections accepted so far (keep-alive reuse keeps this low). */
  readonly connections: number;
  /** Most requests in progress at the same time so far. */
  readonly maxInFlight: number;
  /** Stops listening and drops every connection: clients get "connection refused". */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a proxy on 127.0.0.1 (ephemeral port) forwarding to `upstream` (`http://host:port`)
 * unless `rule` says otherwise: answer a status, redirect, cut the connection in the middle of
 * the body, or never answer.
 */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const hanging = new Set<http.ServerResponse>();
  const proxy: FaultProxy = {
    host: "",
    url: "",
    requests: [],
    rule: () => ({ kind: "pass" }),
    connections: 0,
    maxInFlight: 0,
    down: () => Promise.resolve(),
    up: () => Promise.resolve(),
    stop: () => Promise.resolve(),
  };
  const stats = proxy as { connections: number; maxInFlight: number };
  let inFlight = 0;
  const server = http.createServer((req, res) => {
    inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, inFlight);
    res.once("close", () => inFlight--);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const seen: ProxiedRequest = {
        method: req.method ?? "GET",
        url: req.url ?? "/",
        headers: req.headers,
      };
      proxy.requests.push(seen);
      res.once("finish", () => (seen.status = res.statusCode));
      const action = proxy.rule(seen, proxy.requests.length);
      if (action.kind === "hang") {
        hanging.add(res);
        return;
      }
      if (action.kind === "status") {
        res.writeHead(action.status, action.headers ?? {});
        res.end(action.body ?? "");
        return;
      }
      if (action.kind === "redirect") {
        res.writeHead(action.status ?? 307, { location: action.location, "content-length": "0" });
        res.end();
        return;
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (["host", "connection", "content-length", "transfer-encoding"].includes(k)) continue;
        if (typeof v === "string") headers[k] = v;
      }
      if (action.kind === "pass") {
        for (const [k, v] of Object.entries(action.headers ?? {})) {
          if (v === undefined) delete headers[k];
          else headers[k] = v;
        }
      }
      try {
        const body = chunks.length ? Buffer.concat(chunks) : undefined;
        const target = action.kind === "pass" && action.path ? action.path : seen.url;
        const up = await fetch(`${upstream}${target}`, {
          method: seen.method,
          headers,
          body: body as BodyInit | undefined,
          redirect: "manual",
        });
        const data = Buffer.from(await up.arrayBuffer());
        const out: Record<string, string> = {};
        up.headers.forEach((v, k) => {
          if (!["connection", "transfer-encoding", "content-encoding", "keep-alive"].includes(k)) {
            out[k] = v;
          }
        });
        if (seen.method !== "HEAD") out["content-length"] = String(data.length);
        seen.bytes = data.length;
        res.writeHead(up.status, out);
        if (action.kind === "trickle") {
          for (let at = 0; at < data.length; at += action.bytes) {
            if (res.destroyed) return;
            const piece = data.subarray(at, at + action.bytes);
            await new Promise<void>((resolve) => res.write(piece, () => resolve()));
            await new Promise((r) => setTimeout(r, action.everyMs));
          }
          res.end();
          return;
        }
        if (action.kind === "reset-mid-body") {
          res.write(data.subarray(0, data.length >> 1), () => {
            setTimeout(() => res.socket?.destroy(), 20);
          });
          return;
        }
        res.end(data);
      } catch (err) {
        res.writeHead(502);
        res.end(String(err));
      }
    });
  });
  server.on("connection", () => stats.connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const closeAll = () =>
    new Promise<void>((resolve) => {
      for (const r of hanging) r.socket?.destroy();
      hanging.clear();
      server.closeAllConnections?.();
      server.close(() => resolve());
    });
  Object.assign(proxy, {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    down: closeAll,
    up: () => new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve)),
    stop: closeAll,
  });
  return proxy;
}

/** A loopback port that nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A test CA and the certificates it signed (PEM files in `dir`). */
export interface TestCertificates {
  ca: string;
  caKey: string;
  /** For 127.0.0.1 and localhost. */
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** Makes a CA with `openssl` and signs a server certificate (127.0.0.1) and a client one. */
export async function makeCertificates(dir: string, name = "test"): Promise<TestCertificates> {
  await fs.mkdir(dir, { recursive: true });
  const f = (n: string) => path.join(dir, `${name}-${n}`);
  const certs: TestCertificates = {
    ca: f("ca.crt"),
    caKey: f("ca.key"),
    serverCert: f("server.crt"),
    serverKey: f("server.key"),
    clientCert: f("client.cert"),
    clientKey: f("client.key"),
  };
  await run("openssl", [
    ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"],
    ...["-keyout", certs.caKey, "-out", certs.ca, "-subj", `/CN=${name}-ca`],
    ...["-addext", "basicConstraints=critical,CA:TRUE"],
    ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
  const sign = async (key: string, cert: string, cn: string, ext: string) => {
    const csr = `${cert}.csr`;
    const extFile = `${cert}.ext`;
    await run("openssl", [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      csr,
      "-subj",
      `/CN=${cn}`,
    ]);
    // rustls (Deno's TLS) refuses v1 certificates: extensions make them v3.
    await fs.writeFile(extFile, `basicConstraints=CA:FALSE\n${ext}\n`);
    await run("openssl", [
      ...["x509", "-req", "-in", csr, "-CA", certs.ca, "-CAkey", certs.caKey, "-CAcreateserial"],
      ...["-out", cert, "-days", "2", "-extfile", extFile],
    ]);
  };
  await sign(
    certs.serverKey,
    certs.serverCert,
    "127.0.0.1",
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
  );
  await sign(
    certs.clientKey,
    certs.clientCert,
    "stargz-test-client",
    "extendedKeyUsage=clientAuth",
  );
  return certs;
}
