/**
 * Test harness: the part of the Kubernetes API server that a secrets keychain (and
 * `kubectl get secrets -A -w`) uses, over TLS with a CA of its own: discovery (`/api`,
 * `/api/v1`, `/apis`), `GET /api/v1/secrets` lists with `resourceVersion` and `fieldSelector`
 * on `type`, `watch=true` event streams (newline-delimited JSON), `410 Gone` for a
 * resourceVersion older than the retained history, bearer-token and client-certificate
 * authentication (401 otherwise). There is no kube-apiserver package in Debian; `kubectl`
 * against this server checks that it speaks the real protocol.
 */
import { randomUUID } from "node:crypto";
import * as fs from "node:fs/promises";
import * as https from "node:https";
import type * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { makeCertificates } from "./_registry.ts";

/** A secret as stored (`data` values base64, as the API has them). */
export interface KubeSecret {
  namespace: string;
  name: string;
  type: string;
  data: Record<string, string>;
}

interface Stored {
  apiVersion: "v1";
  kind: "Secret";
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    creationTimestamp: string;
  };
  type: string;
  data: Record<string, string>;
}

interface WatchEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: Stored;
}

/** A running test API server. */
export interface TestKubeApi {
  /** `https://127.0.0.1:PORT`. */
  readonly url: string;
  /** PEM of the CA that signed the server and client certificates. */
  readonly caPem: string;
  readonly caFile: string;
  /** The bearer token accepted. */
  readonly token: string;
  /** A client certificate and key (PEM files) the server accepts. */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** Requests answered, oldest first (`METHOD path?query status`), for assertions. */
  readonly requests: string[];
  /** Creates or replaces a secret (ADDED or MODIFIED event). */
  put(secret: KubeSecret): void;
  /** Deletes a secret (DELETED event). */
  remove(namespace: string, name: string): void;
  /** Forgets the event history: watches from an older resourceVersion get 410 Gone. */
  compact(): void;
  /** Closes every open watch stream (as an API server restart or a load balancer would). */
  dropWatches(): void;
  /** Open watch streams. */
  watchCount(): number;
  /** Writes a kubeconfig for this server (bearer token, or client certificate). */
  kubeconfig(file: string, auth: "token" | "cert" | { exec: string }): Promise<void>;
  stop(): Promise<void>;
}

function status(code: number, reason: string, message: string): object {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code,
  };
}

const DISCOVERY_V1 = {
  kind: "APIResourceList",
  groupVersion: "v1",
  resources: [{
    name: "secrets",
    singularName: "secret",
    namespaced: true,
    kind: "Secret",
    verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
  }],
};

/** Starts the server on a free loopback port with its own certificates under `dir`. */
export async function startKubeApi(dir: string): Promise<TestKubeApi> {
  await fs.mkdir(dir, { recursive: true });
  const certs = await makeCertificates(dir, "kube");
  const caPem = await fs.readFile(certs.ca, "utf8");
  const token = `token-${randomUUID()}`;
  const secrets = new Map<string, Stored>();
  let history: WatchEvent[] = [];
  let rv = 100;
  let oldestKept = rv;
  const watchers = new Set<{ res: http.ServerResponse; filter: (s: Stored) => boolean }>();
  const requests: string[] = [];

  const emit = (ev: WatchEvent) => {
    history.push(ev);
    for (const w of watchers) {
      if (w.filter(ev.object)) {
        w.res.write(JSON.stringify({ type: ev.type, object: ev.object }) + "\n");
      }
    }
  };

  const authorized = (req: http.IncomingMessage): boolean => {
    if (req.headers.authorization === `Bearer ${token}`) return true;
    const sock = req.socket as TLSSocket;
    // The CA is the only one the server trusts, so a verified peer is our client certificate.
    return sock.authorized === true;
  };

  const server = https.createServer({
    key: await fs.readFile(certs.serverKey),
    cert: await fs.readFile(certs.serverCert),
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: false,
  }, (req, res) => {
    const url = new URL(req.url ?? "/", "https://x");
    const send = (code: number, body: object) => {
      requests.push(`${req.method} ${url.pathname}${url.search} ${code}`);
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (!authorized(req)) return send(401, status(401, "Unauthorized", "Unauthorized"));
    if (req.method !== "GET") return send(405, status(405, "MethodNotAllowed", "read only"));
    if (url.pathname === "/api") {
      return send(200, {
        kind: "APIVersions",
        versions: ["v1"],
        serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }],
      });
    }
    if (url.pathname === "/api/v1") return send(200, DISCOVERY_V1);
    if (url.pathname === "/apis") {
      return send(200, { kind: "APIGroupList", apiVersion: "v1", groups: [] });
    }
    if (url.pathname === "/version") {
      return send(200, { major: "1", minor: "32", gitVersion: "v1.32.0-stargz-test" });
    }
    if (url.pathname !== "/api/v1/secrets") {
      return send(404, status(404, "NotFound", `${url.pathname} not found`));
    }
    const selector = url.searchParams.get("fieldSelector") ?? "";
    const wantType = /^type=(.+)$/.exec(selector)?.[1];
    if (selector && !wantType) return send(400, status(400, "BadRequest", "unsupported selector"));
    const filter = (s: Stored) => wantType === undefined || s.type === wantType;
    const watch = url.searchParams.get("watch");
    if (watch !== "true" && watch !== "1") {
      return send(200, {
        kind: "SecretList",
        apiVersion: "v1",
        metadata: { resourceVersion: String(rv) },
        items: [...secrets.values()].filter(filter),
      });
    }
    const from = Number(url.searchParams.get("resourceVersion") ?? "0");
    requests.push(`${req.method} ${url.pathname}${url.search} 200`);
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    // The API server answers a watch at once; events follow as they happen.
    res.flushHeaders();
    if (from > 0 && from < oldestKept) {
      // The API server answers an expired resourceVersion with an ERROR event in a 200 stream.
      res.end(
        JSON.stringify({
          type: "ERROR",
          object: status(410, "Expired", `too old resource version: ${from} (${oldestKept})`),
        }) + "\n",
      );
      return;
    }
    const w = { res, filter };
    watchers.add(w);
    const replay = from > 0
      ? history.filter((e) => e.rv > from)
      : [...secrets.values()].map((object) => ({ rv, type: "ADDED" as const, object }));
    for (const ev of replay) {
      if (filter(ev.object)) res.write(JSON.stringify({ type: ev.type, object: ev.object }) + "\n");
    }
    const timeout = Number(url.searchParams.get("timeoutSeconds") ?? "0");
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on("close", () => {
      clearTimeout(timer);
      watchers.delete(w);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `https://127.0.0.1:${port}`;

  return {
    url,
    caPem,
    caFile: certs.ca,
    token,
    clientCertFile: certs.clientCert,
    clientKeyFile: certs.clientKey,
    requests,
    put(s) {
      const key = `${s.namespace}/${s.name}`;
      const old = secrets.get(key);
      rv++;
      const object: Stored = {
        apiVersion: "v1",
        kind: "Secret",
        metadata: {
          name: s.name,
          namespace: s.namespace,
          uid: old?.metadata.uid ?? randomUUID(),
          resourceVersion: String(rv),
          creationTimestamp: old?.metadata.creationTimestamp ??
            new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        },
        type: s.type,
        data: s.data,
      };
      secrets.set(key, object);
      emit({ rv, type: old ? "MODIFIED" : "ADDED", object });
    },
    remove(namespace, name) {
      const key = `${namespace}/${name}`;
      const old = secrets.get(key);
      if (!old) return;
      secrets.delete(key);
      rv++;
      emit({
        rv,
        type: "DELETED",
        object: { ...old, metadata: { ...old.metadata, resourceVersion: String(rv) } },
      });
    },
    compact() {
      history = [];
      oldestKept = rv + 1;
    },
    dropWatches() {
      for (const w of watchers) w.res.destroy();
      watchers.clear();
    },
    watchCount: () => watchers.size,
    async kubeconfig(file, auth) {
      const user = auth === "token"
        ? { token }
        : auth === "cert"
        ? { "client-certificate": certs.clientCert, "client-key": certs.clientKey }
        : {
          exec: {
            apiVersion: "client.authentication.k8s.io/v1",
            command: auth.exec,
            args: [],
            interactiveMode: "Never",
          },
        };
      const doc = {
        apiVersion: "v1",
        kind: "Config",
        clusters: [{
          name: "test",
          cluster: {
            server: url,
            "certificate-authority-data": Buffer.from(caPem).toString("base64"),
          },
        }],
        users: [{ name: "snapshotter", user }],
        contexts: [{ name: "test", context: { cluster: "test", user: "snapshotter" } }],
        "current-context": "test",
      };
      // JSON is YAML: kubectl and YAML parsers read it alike.
      const tmp = `${file}.tmp`;
      await fs.writeFile(tmp, JSON.stringify(doc, null, 2));
      await fs.rename(tmp, file);
    },
    async stop() {
      for (const w of watchers) w.res.destroy();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

/** A `kubernetes.io/dockerconfigjson` secret for `host` with `username`/`password`. */
export function dockerConfigSecret(
  namespace: string,
  name: string,
  host: string,
  username: string,
  password: string,
): KubeSecret {
  const config = {
    auths: { [host]: { auth: Buffer.from(`${username}:${password}`).toString("base64") } },
  };
  return {
    namespace,
    name,
    type: "kubernetes.io/dockerconfigjson",
    data: { ".dockerconfigjson": Buffer.from(JSON.stringify(config)).toString("base64") },
  };
}
