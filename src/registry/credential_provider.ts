/**
 * kubelet credential provider plugins as a keychain: the exec plugins of a kubelet
 * `CredentialProviderConfig` (the file kubelet reads with `--image-credential-provider-config`,
 * its binaries in `--image-credential-provider-bin-dir`), spoken to with the
 * `credentialprovider.kubelet.k8s.io/v1` protocol: a `CredentialProviderRequest` JSON on stdin, a
 * `CredentialProviderResponse` JSON on stdout. Answers are cached as the plugin says
 * (`cacheKeyType` Image/Registry/Global, `cacheDuration`, else the provider's
 * `defaultCacheDuration`), so an ECR-style plugin is run once per 12 h, not per range read.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import type { Credentials, Keychain } from "./keychain.ts";
import { normaliseKey } from "./keychain.ts";

/** The plugin protocol version spoken (the only stable one). */
export const CREDENTIAL_PROVIDER_API = "credentialprovider.kubelet.k8s.io/v1";

const GO_DURATION_UNITS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  ms: 1,
  s: 1e3,
  m: 60e3,
  h: 3600e3,
};

/** Parses a Go `time.Duration` string (`12h`, `1h30m`, `90s`, `0`) into milliseconds. */
export function parseGoDuration(text: string): number | undefined {
  if (text === "0") return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let i = 0;
  while (i < text.length) {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * GO_DURATION_UNITS[m[2]!]!;
    i = re.lastIndex;
  }
  return i > 0 ? total : undefined;
}

const Duration = v.pipe(
  v.string(),
  v.check((s) => parseGoDuration(s) !== undefined, "a duration such as 12h or 30m"),
);

const Provider = v.object({
  name: v.pipe(v.string(), v.regex(/^[^/\\]+$/, "a file name in the bin dir")),
  matchImages: v.array(v.string()),
  defaultCacheDuration: Duration,
  apiVersion: v.literal(CREDENTIAL_PROVIDER_API),
  args: v.optional(v.array(v.string()), []),
  env: v.optional(v.array(v.object({ name: v.string(), value: v.string() })), []),
});
type Provider = v.InferOutput<typeof Provider>;

const ProviderConfig = v.object({
  apiVersion: v.picklist(["kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1"]),
  kind: v.literal("CredentialProviderConfig"),
  providers: v.array(Provider),
});

const ProviderResponse = v.object({
  apiVersion: v.literal(CREDENTIAL_PROVIDER_API),
  kind: v.literal("CredentialProviderResponse"),
  cacheKeyType: v.picklist(["Image", "Registry", "Global"]),
  cacheDuration: v.optional(Duration),
  auth: v.optional(
    v.record(
      v.string(),
      v.object({ username: v.optional(v.string(), ""), password: v.optional(v.string(), "") }),
    ),
    {},
  ),
});
type ProviderResponse = v.InferOutput<typeof ProviderResponse>;

/** A credential provider config or plugin that cannot be used; the message names it. */
export class CredentialProviderError extends Error {
  override name = "CredentialProviderError";
}

function globSegment(pattern: string, text: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^.]*").replace(
    /\?/g,
    "[^.]",
  );
  return new RegExp(`^${re}$`).test(text);
}

function splitImage(s: string): { host: string; port: string; path: string } {
  const noScheme = s.replace(/^[a-z]+:\/\//i, "");
  const slash = noScheme.indexOf("/");
  const hostPort = slash < 0 ? noScheme : noScheme.slice(0, slash);
  const rest = slash < 0 ? "" : noScheme.slice(slash);
  const colon = hostPort.lastIndexOf(":");
  return colon < 0
    ? { host: hostPort, port: "", path: rest }
    : { host: hostPort.slice(0, colon), port: hostPort.slice(colon + 1), path: rest };
}

/**
 * kubelet's `matchImages` rule: the host matches segment by segment (`*.example.io` matches
 * `a.example.io`, not `example.io` nor `a.b.example.io`), a port must be equal when the pattern
 * has one, and the pattern's path must be a prefix of the image's.
 */
export function matchImage(pattern: string, image: string): boolean {
  const p = splitImage(pattern);
  const i = splitImage(image);
  const ps = p.host.toLowerCase().split(".");
  const is = i.host.toLowerCase().split(".");
  if (ps.length !== is.length) return false;
  if (!ps.every((seg, k) => globSegment(seg, is[k]!))) return false;
  if (p.port && p.port !== i.port) return false;
  return i.path.startsWith(p.path);
}

interface CachedAnswer {
  auth: ProviderResponse["auth"];
  expiresAt: number;
}

/** Options of {@link credentialProviderKeychain}. */
export interface CredentialProviderOptions {
  /** The `CredentialProviderConfig` file (YAML or JSON). */
  configPath: string;
  /** Directory holding the plugin executables. */
  binDir: string;
  /** Clock (tests). */
  now?: () => number;
  /** A plugin run that takes longer is killed and counts as failed. */
  timeoutMs?: number;
}

/** A keychain running kubelet credential provider plugins. */
export interface CredentialProviderKeychain extends Keychain {
  readonly providers: readonly string[];
}

function runPlugin(
  file: string,
  provider: Provider,
  image: string,
  timeoutMs: number,
): Promise<ProviderResponse> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    for (const e of provider.env) env[e.name] = e.value;
    const child = spawn(file, provider.args, { stdio: ["pipe", "pipe", "pipe"], env });
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-500)));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new CredentialProviderError(`credential provider ${provider.name}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const what = `credential provider ${provider.name}`;
      if (code !== 0) {
        // stderr is the plugin's own diagnostics; stdout may hold secrets and is never shown.
        const why = signal ? `killed by ${signal}` : `exit status ${code}`;
        return reject(new CredentialProviderError(`${what}: ${why}: ${err.trim()}`));
      }
      let parsed;
      try {
        parsed = v.safeParse(ProviderResponse, JSON.parse(out));
      } catch {
        return reject(new CredentialProviderError(`${what}: output is not JSON`));
      }
      if (!parsed.success) {
        const issue = parsed.issues[0];
        const at = issue.path?.map((p) => String(p.key)).join(".") ?? "";
        return reject(
          new CredentialProviderError(`${what}: malformed response at ${at}: ${issue.message}`),
        );
      }
      resolve(parsed.output);
    });
    child.stdin.on("error", () => {});
    child.stdin.end(JSON.stringify({
      apiVersion: CREDENTIAL_PROVIDER_API,
      kind: "CredentialProviderRequest",
      image,
    }));
  });
}

/** The best entry of a response's `auth` for `image`: the longest matching key. */
function pick(auth: ProviderResponse["auth"], image: string): Credentials | undefined {
  const keys = Object.keys(auth).filter((k) => matchImage(k, image)).sort((a, b) =>
    b.length - a.length
  );
  const e = keys[0] !== undefined ? auth[keys[0]] : undefined;
  return e ? { username: e.username, password: e.password } : undefined;
}

/** Loads the config (an error names the file and the problem) and returns the keychain. */
export async function credentialProviderKeychain(
  opts: CredentialProviderOptions,
): Promise<CredentialProviderKeychain> {
  let raw: unknown;
  try {
    raw = parseYaml(await fs.readFile(opts.configPath, "utf8"));
  } catch (err) {
    throw new CredentialProviderError(`${opts.configPath}: ${(err as Error).message}`);
  }
  const parsed = v.safeParse(ProviderConfig, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const at = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    throw new CredentialProviderError(`${opts.configPath}: ${at}: ${issue.message}`);
  }
  const providers = parsed.output.providers;
  const now = opts.now ?? Date.now;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  /** Per provider: answers by cache key (`image:…`, `registry:…`, `global`). */
  const caches = providers.map(() => new Map<string, CachedAnswer>());
  const inflight = new Map<string, Promise<Credentials | undefined>>();

  const cached = (i: number, image: string, host: string): CachedAnswer | undefined => {
    const cache = caches[i]!;
    for (const key of [`image:${image}`, `registry:${host}`, "global"]) {
      const hit = cache.get(key);
      if (!hit) continue;
      if (hit.expiresAt > now()) return hit;
      cache.delete(key);
    }
    return undefined;
  };

  const ask = async (i: number, image: string, host: string): Promise<Credentials | undefined> => {
    const provider = providers[i]!;
    const hit = cached(i, image, host);
    if (hit) return pick(hit.auth, image);
    const res = await runPlugin(path.join(opts.binDir, provider.name), provider, image, timeoutMs);
    const ttl = parseGoDuration(res.cacheDuration ?? provider.defaultCacheDuration) ?? 0;
    if (ttl > 0) {
      const key = res.cacheKeyType === "Image"
        ? `image:${image}`
        : res.cacheKeyType === "Registry"
        ? `registry:${host}`
        : "global";
      caches[i]!.set(key, { auth: res.auth, expiresAt: now() + ttl });
    }
    return pick(res.auth, image);
  };

  return {
    name: "credential-provider",
    providers: providers.map((p) => p.name),
    async get(hostIn, repository) {
      const host = normaliseKey(hostIn);
      const image = repository ? `${host}/${repository}` : host;
      for (const [i, provider] of providers.entries()) {
        if (!provider.matchImages.some((p) => matchImage(p, image))) continue;
        const key = `${i}\n${image}`;
        let p = inflight.get(key);
        if (!p) {
          p = ask(i, image, host).finally(() => inflight.delete(key));
          inflight.set(key, p);
        }
        const c = await p;
        if (c) return c;
      }
      return undefined;
    },
  };
}
