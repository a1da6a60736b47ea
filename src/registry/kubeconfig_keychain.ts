/**
 * The kubeconfig keychain: registry credentials from the cluster's `kubernetes.io/dockerconfigjson`
 * Secrets (the image pull secrets pods name), all namespaces, through the API server the
 * kubeconfig names. One list, then a watch from the list's resourceVersion; a watch that the
 * server expires (410 Gone) or that drops is followed by a new list, so the credentials always
 * mirror the secrets, rotated ones included.
 *
 * The snapshotter may start before the cluster (upstream's behaviour, kept): while the
 * kubeconfig does not exist it is looked for every 10 s, and start-up never waits for it.
 */
import * as os from "node:os";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import * as v from "valibot";
import type { Logger } from "../log/mod.ts";
import { AuthEntry, type Credentials, fromEntry, type Keychain, normaliseKey } from "./keychain.ts";
import { KubeClient, KubeError, loadKubeconfig, type WatchEvent } from "./_kube_client.ts";

/** The secret type holding a docker config (`.dockerconfigjson`). */
export const DOCKER_CONFIG_SECRET_TYPE = "kubernetes.io/dockerconfigjson";
/** How often a missing kubeconfig is looked for (upstream: 10 s). */
export const KUBECONFIG_POLL_MS = 10_000;

const SECRETS_PATH = `/api/v1/secrets?fieldSelector=${
  encodeURIComponent(`type=${DOCKER_CONFIG_SECRET_TYPE}`)
}`;

const Secret = v.object({
  metadata: v.object({
    name: v.string(),
    namespace: v.optional(v.string(), ""),
    resourceVersion: v.optional(v.string(), ""),
  }),
  type: v.optional(v.string()),
  data: v.optional(v.nullable(v.record(v.string(), v.string())), {}),
});
const SecretList = v.object({
  metadata: v.object({ resourceVersion: v.string() }),
  items: v.nullable(v.array(Secret)),
});
const Status = v.object({ kind: v.literal("Status"), code: v.optional(v.number()) });
const DockerConfigJson = v.object({ auths: v.optional(v.record(v.string(), AuthEntry), {}) });

/** Registry credentials of one secret, by normalised registry host. */
interface SecretCredentials {
  order: number;
  byHost: Map<string, Credentials>;
}

/** Options of {@link kubeconfigKeychain}. */
export interface KubeconfigKeychainOptions {
  /** The kubeconfig; "" = `$KUBECONFIG` (its first file) or `~/.kube/config`. */
  kubeconfigPath: string;
  log: Logger;
  /** How often to look for a missing kubeconfig (default {@link KUBECONFIG_POLL_MS}). */
  pollMs?: number;
  /** Longest wait between attempts after an API server error (default 30 s). */
  maxBackoffMs?: number;
}

/** The running keychain; `close()` stops its watch. */
export interface KubeconfigKeychain extends Keychain {
  /** Resolves after the next full list (tests; the keychain never needs a caller to wait). */
  listed(): Promise<void>;
  /** Secrets with registry credentials (names, never contents). */
  secrets(): string[];
  close(): void;
}

function defaultKubeconfig(): string {
  const env = process.env.KUBECONFIG;
  if (env) return env.split(":")[0]!;
  return path.join(os.homedir(), ".kube", "config");
}

function parseSecret(obj: unknown): { key: string; rv: string; creds?: Map<string, Credentials> } {
  const s = v.parse(Secret, obj);
  const key = `${s.metadata.namespace}/${s.metadata.name}`;
  const b64 = s.data?.[".dockerconfigjson"];
  if (!b64) return { key, rv: s.metadata.resourceVersion };
  const cfg = v.safeParse(DockerConfigJson, JSON.parse(Buffer.from(b64, "base64").toString()));
  if (!cfg.success) return { key, rv: s.metadata.resourceVersion };
  const byHost = new Map<string, Credentials>();
  for (const [host, entry] of Object.entries(cfg.output.auths)) {
    const c = fromEntry(entry);
    if (c) byHost.set(normaliseKey(host), c);
  }
  return { key, rv: s.metadata.resourceVersion, creds: byHost };
}

/** Starts the keychain; it lists and watches in the background. */
export function kubeconfigKeychain(opts: KubeconfigKeychainOptions): KubeconfigKeychain {
  const file = opts.kubeconfigPath || defaultKubeconfig();
  const pollMs = opts.pollMs ?? KUBECONFIG_POLL_MS;
  const maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  const log = opts.log;
  let secrets = new Map<string, SecretCredentials>();
  let order = 0;
  const stop = new AbortController();
  let listWaiters: (() => void)[] = [];

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      stop.signal.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });

  const apply = (ev: WatchEvent) => {
    if (ev.type === "BOOKMARK") return undefined;
    const s = parseSecret(ev.object);
    if (ev.type === "DELETED" || !s.creds) secrets.delete(s.key);
    else secrets.set(s.key, { order: ++order, byHost: s.creds });
    return s.rv;
  };

  /** One list + watch cycle per iteration; returns when the kubeconfig or the server fails. */
  const syncWith = async (client: KubeClient): Promise<void> => {
    for (let rv: string | undefined; !stop.signal.aborted;) {
      if (rv === undefined) {
        const list = v.parse(SecretList, await client.get(SECRETS_PATH));
        const next = new Map<string, SecretCredentials>();
        for (const item of list.items ?? []) {
          const s = parseSecret(item);
          if (s.creds) next.set(s.key, { order: ++order, byHost: s.creds });
        }
        secrets = next;
        rv = list.metadata.resourceVersion;
        log.debug("kubeconfig keychain: listed secrets", { count: next.size, resourceVersion: rv });
        for (const w of listWaiters) w();
        listWaiters = [];
      }
      let gone = false;
      const from: string = rv;
      await client.watch(
        `${SECRETS_PATH}&watch=true&allowWatchBookmarks=true&resourceVersion=${from}`,
        (ev) => {
          if (ev.type === "ERROR") {
            // 410 Gone (our resourceVersion is older than the server keeps) or another
            // error status: only a new list can tell what the secrets are now.
            const st = v.safeParse(Status, ev.object);
            log.debug("kubeconfig keychain: watch error", {
              code: st.success ? st.output.code : undefined,
            });
            gone = true;
            return;
          }
          rv = apply(ev) || rv;
        },
        stop.signal,
      );
      if (gone) {
        log.debug("kubeconfig keychain: watch expired, listing again", { resourceVersion: rv });
        rv = undefined;
      } else if (rv === from) {
        // A watch that ended without any event may have been cut early; a fresh list is cheap
        // and cannot miss what happened meanwhile.
        rv = undefined;
      }
    }
  };

  const run = async () => {
    let waitingLogged = false;
    let backoff = 1000;
    while (!stop.signal.aborted) {
      try {
        await fs.access(file);
      } catch {
        if (!waitingLogged) {
          log.info("kubeconfig keychain: waiting for the kubeconfig", { kubeconfig: file });
          waitingLogged = true;
        }
        await sleep(pollMs);
        continue;
      }
      let client: KubeClient | undefined;
      try {
        client = new KubeClient(await loadKubeconfig(file));
        await syncWith(client);
      } catch (err) {
        if (stop.signal.aborted) break;
        const message = err instanceof KubeError || err instanceof Error
          ? err.message
          : String(err);
        log.warn("kubeconfig keychain: cannot sync secrets, retrying", {
          kubeconfig: file,
          error: message,
          retry_ms: backoff,
        });
        await sleep(backoff);
        backoff = Math.min(backoff * 2, maxBackoffMs);
        continue;
      } finally {
        client?.close();
      }
      backoff = 1000;
    }
  };
  run();

  return {
    name: "kubeconfig",
    get(host) {
      const want = normaliseKey(host);
      let best: SecretCredentials | undefined;
      for (const s of secrets.values()) {
        if (s.byHost.has(want) && (!best || s.order > best.order)) best = s;
      }
      return Promise.resolve(best?.byHost.get(want));
    },
    listed: () => new Promise<void>((resolve) => listWaiters.push(resolve)),
    secrets: () => [...secrets.keys()],
    close: () => stop.abort(),
  };
}
