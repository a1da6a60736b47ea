/**
 * Keychains: where credentials for a registry host (and repository) come from. The
 * docker-config keychain reads `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`) like
 * the docker CLI: `auths` entries, `credHelpers` per host and the `credsStore` default through
 * `docker-credential-<name> get`. Other keychains (CRI, kubelet credential providers, Kubernetes
 * secrets) implement the same face; {@link chainKeychains} asks them in order and records which
 * one answered, so a refusal can name it.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as v from "valibot";

/** Credentials for one registry host. Never log or format these. */
export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (docker's `identitytoken`): tokens are fetched with a POST. */
  identityToken?: string;
  /** A bearer token to send as is (docker's `registrytoken`). */
  registryToken?: string;
  /** Name of the keychain that gave them (not secret; error messages name it). */
  keychain?: string;
}

/**
 * Looks up credentials by registry host (`host[:port]`, `docker.io` for Docker Hub) and, when
 * known, the repository on it (`library/busybox`), for keychains that hold them per image.
 */
export interface Keychain {
  /** Short name for messages: `docker-config`, `cri`, … */
  readonly name?: string;
  get(host: string, repository?: string): Promise<Credentials | undefined>;
}

/** The key docker uses for Docker Hub in config files and credential helpers. */
export const DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/";

const HUB_NAMES = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);

/** One `auths` entry of a docker config file. */
export const AuthEntry = v.object({
  auth: v.optional(v.string()),
  username: v.optional(v.string()),
  password: v.optional(v.string()),
  identitytoken: v.optional(v.string()),
  registrytoken: v.optional(v.string()),
});
const DockerConfig = v.object({
  auths: v.optional(v.record(v.string(), AuthEntry)),
  credHelpers: v.optional(v.record(v.string(), v.string())),
  credsStore: v.optional(v.string()),
});
type DockerConfig = v.InferOutput<typeof DockerConfig>;
const HelperReply = v.object({
  ServerURL: v.optional(v.string()),
  Username: v.optional(v.string()),
  Secret: v.string(),
});

/** Reduces `https://host:port/v1/` and similar config keys to `host:port`. */
export function normaliseKey(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//i, "").split("/")[0].toLowerCase();
  return HUB_NAMES.has(host) ? "docker.io" : host;
}

/** The host name credential helpers and `auths` use for `host`. */
export function authKeyFor(host: string): string {
  return HUB_NAMES.has(host) ? DOCKER_HUB_AUTH_KEY : host;
}

/**
 * The username and password of a base64 `user:password` `auth` field (docker config entries,
 * CRI `AuthConfig`); nothing when it holds no colon after a non-empty user.
 */
export function decodeAuthField(auth: string): { username: string; password: string } | undefined {
  const decoded = Buffer.from(auth, "base64").toString();
  const colon = decoded.indexOf(":");
  if (colon <= 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Credentials from a docker config `auths` entry (also the shape of dockerconfigjson secrets). */
export function fromEntry(entry: v.InferOutput<typeof AuthEntry>): Credentials | undefined {
  const c: Credentials = entry.auth ? { ...decodeAuthField(entry.auth) } : {};
  if (entry.username) c.username = entry.username;
  if (entry.password) c.password = entry.password;
  if (entry.identitytoken) c.identityToken = entry.identitytoken;
  if (entry.registrytoken) c.registryToken = entry.registrytoken;
  return Object.keys(c).length > 0 ? c : undefined;
}

/** Runs `docker-credential-<helper> get` for `serverUrl`; undefined when it has nothing. */
export function runCredentialHelper(
  helper: string,
  serverUrl: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Credentials | undefined> {
  return new Promise((resolve, reject) => {
    const name = `docker-credential-${helper}`;
    const child = spawn(name, ["get"], { stdio: ["pipe", "pipe", "pipe"], env });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.resume();
    child.on("error", (e) => reject(new Error(`credential helper ${name}: ${e.message}`)));
    child.on("close", (code) => {
      // Helpers exit non-zero with "credentials not found in native keychain" for unknown hosts.
      if (code !== 0) return resolve(undefined);
      let parsed;
      try {
        parsed = v.safeParse(HelperReply, JSON.parse(out));
      } catch {
        return reject(new Error(`credential helper ${name}: output is not JSON`));
      }
      if (!parsed.success) return reject(new Error(`credential helper ${name}: malformed output`));
      const { Username, Secret } = parsed.output;
      if (Username === "<token>") return resolve({ identityToken: Secret });
      resolve({ username: Username ?? "", password: Secret });
    });
    child.stdin.end(serverUrl);
  });
}

/** Options of {@link dockerConfigKeychain}. */
export interface DockerConfigKeychainOptions {
  /** Directory holding `config.json` (default `$DOCKER_CONFIG` or `~/.docker`). */
  configDir?: string;
  /** Environment for credential helpers (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/** The docker CLI's keychain; the file is re-read when it changes. */
export function dockerConfigKeychain(opts: DockerConfigKeychainOptions = {}): Keychain {
  const env = opts.env ?? process.env;
  const file = path.join(
    opts.configDir ?? env.DOCKER_CONFIG ?? path.join(os.homedir(), ".docker"),
    "config.json",
  );
  let cached: { mtimeMs: number; config: DockerConfig } | undefined;
  const load = async (): Promise<DockerConfig | undefined> => {
    let st;
    try {
      st = await fs.stat(file);
    } catch {
      return undefined;
    }
    if (cached?.mtimeMs === st.mtimeMs) return cached.config;
    const parsed = v.safeParse(DockerConfig, JSON.parse(await fs.readFile(file, "utf8")));
    if (!parsed.success) throw new Error(`${file}: not a docker config file`);
    cached = { mtimeMs: st.mtimeMs, config: parsed.output };
    return parsed.output;
  };
  return {
    name: "docker-config",
    async get(host) {
      const config = await load();
      if (!config) return undefined;
      const want = normaliseKey(host);
      const helper =
        Object.entries(config.credHelpers ?? {}).find(([k]) => normaliseKey(k) === want)?.[1] ??
          config.credsStore;
      if (helper) {
        const creds = await runCredentialHelper(helper, authKeyFor(want), env);
        if (creds) return creds;
      }
      for (const [k, entry] of Object.entries(config.auths ?? {})) {
        if (normaliseKey(k) === want) return fromEntry(entry);
      }
      return undefined;
    },
  };
}

/** A keychain over a fixed map (host → credentials); useful for tests and flags. */
export function staticKeychain(entries: Record<string, Credentials>): Keychain {
  const byHost = new Map(Object.entries(entries).map(([k, c]) => [normaliseKey(k), c]));
  return { name: "static", get: (host) => Promise.resolve(byHost.get(normaliseKey(host))) };
}

/**
 * Asks each keychain in turn; the first with credentials wins and is named in them. A keychain
 * that fails is skipped (its error logged by `onError` without any secret) so one broken
 * source does not hide the others.
 */
export function chainKeychains(
  chains: readonly Keychain[],
  onError?: (keychain: string, err: unknown) => void,
): Keychain & { readonly names: readonly string[] } {
  const names = chains.map((k, i) => k.name ?? `keychain ${i + 1}`);
  return {
    name: names.join(", "),
    names,
    async get(host, repository) {
      for (const [i, k] of chains.entries()) {
        let c;
        try {
          c = await k.get(host, repository);
        } catch (err) {
          onError?.(names[i]!, err);
          continue;
        }
        if (c) return { ...c, keychain: c.keychain ?? names[i] };
      }
      return undefined;
    },
  };
}
