/**
 * Registry authentication: `WWW-Authenticate` challenges, bearer tokens (docker token spec:
 * GET with basic credentials or anonymously, OAuth2 POST with a refresh token) cached per host
 * and scope until they expire, and basic auth.
 */
import * as v from "valibot";
import { RegistryError, UnauthorizedError } from "./errors.ts";
import type { Credentials, Keychain } from "./keychain.ts";

/** One challenge of a `WWW-Authenticate` header. */
export interface AuthChallenge {
  /** Lower-case scheme: `bearer`, `basic`, … */
  scheme: string;
  /** Parameters with lower-case names (`realm`, `service`, `scope`, `error`). */
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` value into its challenges (RFC 7235, quoted strings). */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i])) i++;
    return header.slice(start, i);
  };
  while (i < n) {
    skipWs();
    while (i < n && header[i] === ",") {
      i++;
      skipWs();
    }
    const scheme = token();
    if (!scheme) break;
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    for (;;) {
      skipWs();
      const save = i;
      const name = token();
      skipWs();
      if (!name || header[i] !== "=") {
        i = save;
        break;
      }
      i++;
      skipWs();
      let value = "";
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        value = token();
      }
      challenge.params[name.toLowerCase()] = value;
      skipWs();
      if (header[i] === ",") {
        i++;
        continue;
      }
      break;
    }
  }
  return out;
}

const TokenReply = v.object({
  token: v.optional(v.string()),
  access_token: v.optional(v.string()),
  refresh_token: v.optional(v.string()),
  expires_in: v.optional(v.number()),
  issued_at: v.optional(v.string()),
});

/** Tokens without `expires_in` live 60 s (docker token spec). */
const DEFAULT_TOKEN_TTL_SEC = 60;
/** Renew a little before expiry so a request never carries a token that just ran out. */
const EXPIRY_MARGIN_MS = 5_000;

/** How tokens are fetched: plain `fetch` with a per-request timeout. */
export type AuthFetch = (url: string, init: RequestInit) => Promise<Response>;

const JwtClaims = v.object({ exp: v.optional(v.number()) });

/** The `exp` of a JWT in ms since the epoch; undefined for opaque tokens or tokens without one. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims = v.safeParse(
      JwtClaims,
      JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")),
    );
    return claims.success && claims.output.exp !== undefined ? claims.output.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** The repository a request is for, from its first `repository:NAME:ACTIONS` scope. */
function repositoryOf(scopes: readonly string[]): string | undefined {
  const m = /^repository:(.+):[^:]*$/.exec(scopes[0] ?? "");
  return m?.[1];
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/**
 * Authorizes requests per registry host. It remembers the last challenge of every host, the
 * tokens per (host, scopes), and refresh tokens handed out by OAuth2 token servers.
 */
export class Authenticator {
  private readonly challenges = new Map<string, AuthChallenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  private readonly refreshTokens = new Map<string, string>();
  private readonly credentials = new Map<string, Promise<Credentials | undefined>>();

  constructor(private readonly keychain: Keychain, private readonly send: AuthFetch) {}

  /**
   * Credentials for `host` (and the repository `scopes` name), asked once and kept until the
   * registry refuses them: a keychain lookup may read a file or run a credential helper, too
   * slow for every range read.
   */
  private credentialsFor(
    host: string,
    scopes: readonly string[],
  ): Promise<Credentials | undefined> {
    const repository = repositoryOf(scopes);
    const key = `${host}\n${repository ?? ""}`;
    let p = this.credentials.get(key);
    if (!p) {
      p = this.keychain.get(host, repository);
      p.catch(() => this.credentials.delete(key));
      this.credentials.set(key, p);
    }
    return p;
  }

  /**
   * Why a request to `host` was refused, as far as credentials go: which keychain gave the ones
   * sent, or that none had any. Never includes the secret.
   */
  async explainRefusal(host: string, scopes: readonly string[]): Promise<string> {
    const c = await this.credentialsFor(host, scopes).catch(() => undefined);
    const tried = this.keychain.name ?? "keychain";
    if (!c) return `no credentials for ${host} in any keychain (tried ${tried})`;
    return `credentials for ${host} from the ${c.keychain ?? tried} keychain were refused`;
  }

  /** The `Authorization` value for a request to `host` needing `scopes`, if any is known. */
  async authorization(host: string, scopes: readonly string[]): Promise<string | undefined> {
    const ch = this.challenges.get(host);
    if (!ch) return undefined;
    if (ch.scheme === "basic") {
      const c = await this.credentialsFor(host, scopes);
      if (!c?.username && !c?.password) return undefined;
      return `Basic ${Buffer.from(`${c.username ?? ""}:${c.password ?? ""}`).toString("base64")}`;
    }
    if (ch.scheme !== "bearer") return undefined;
    const key = `${host}\n${[...scopes].sort().join(" ")}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(host, ch, scopes).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    const t = await p;
    this.tokens.set(key, t);
    return `Bearer ${t.token}`;
  }

  /**
   * Records a 401 answer's challenge, forgets the token and the credentials that were refused
   * (the keychain is asked again), and says whether retrying can help: not without a usable
   * challenge, nor when basic credentials were refused and the keychain has no others (a
   * rotated secret does give others). `sent` is the refused request's `Authorization`; a
   * request sent before the challenge was known (one of several started together) carried none.
   */
  async unauthorized(
    host: string,
    scopes: readonly string[],
    wwwAuthenticate: string | null,
    sent: string | undefined,
  ): Promise<boolean> {
    const parsed = parseWwwAuthenticate(wwwAuthenticate ?? "");
    const ch = parsed.find((c) => c.scheme === "bearer") ??
      parsed.find((c) => c.scheme === "basic");
    if (!ch) return false;
    this.challenges.set(host, ch);
    this.credentials.delete(`${host}\n${repositoryOf(scopes) ?? ""}`);
    this.tokens.delete(`${host}\n${[...scopes].sort().join(" ")}`);
    if (ch.scheme !== "basic" || !sent?.toLowerCase().startsWith("basic ")) return true;
    const next = await this.authorization(host, scopes).catch(() => undefined);
    return next !== undefined && next !== sent;
  }

  /** True when `host` has asked for authentication before. */
  knows(host: string): boolean {
    return this.challenges.has(host);
  }

  private async fetchToken(
    host: string,
    ch: AuthChallenge,
    scopes: readonly string[],
  ): Promise<CachedToken> {
    const realm = ch.params.realm;
    if (!realm) throw new RegistryError(`bearer challenge from ${host} has no realm`);
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw new RegistryError(`bearer challenge from ${host} has an invalid realm`);
    }
    let creds = await this.credentialsFor(host, scopes);
    if (creds?.registryToken && (jwtExpiry(creds.registryToken) ?? Infinity) <= Date.now()) {
      // The keychain may have a newer token by now (a new CRI pull), or none.
      this.credentials.delete(`${host}\n${repositoryOf(scopes) ?? ""}`);
      creds = await this.credentialsFor(host, scopes);
    }
    if (creds?.registryToken) {
      const exp = jwtExpiry(creds.registryToken);
      return {
        token: creds.registryToken,
        expiresAt: exp === undefined ? Number.POSITIVE_INFINITY : exp - EXPIRY_MARGIN_MS,
      };
    }
    const allScopes = [...new Set([...scopes, ...(ch.params.scope?.split(" ") ?? [])])].filter(
      Boolean,
    );
    const service = ch.params.service ?? "";
    const refresh = creds?.identityToken ?? this.refreshTokens.get(host);
    let res: Response;
    const started = Date.now();
    if (refresh) {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refresh,
        service,
        client_id: "stargz",
        access_type: "offline",
        scope: allScopes.join(" "),
      });
      if (creds?.username) form.set("username", creds.username);
      res = await this.send(realmUrl.href, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" },
        body: form.toString(),
      });
    } else {
      if (service) realmUrl.searchParams.set("service", service);
      for (const s of allScopes) realmUrl.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (creds?.username || creds?.password) {
        headers.authorization = `Basic ${
          Buffer.from(`${creds.username ?? ""}:${creds.password ?? ""}`).toString("base64")
        }`;
      }
      res = await this.send(realmUrl.href, { method: "GET", headers });
    }
    const text = await res.text();
    if (res.status === 401 || res.status === 403) {
      const from = creds
        ? `the credentials from the ${creds.keychain ?? this.keychain.name ?? "given"} keychain`
        : "anonymous access";
      throw new UnauthorizedError(
        `token server ${realmUrl.host} refused ${from} for ${host} (HTTP ${res.status})`,
        res.status,
      );
    }
    if (res.status !== 200) {
      throw new RegistryError(
        `token server ${realmUrl.host} answered HTTP ${res.status} for ${host}`,
        res.status,
      );
    }
    let reply;
    try {
      reply = v.parse(TokenReply, JSON.parse(text));
    } catch {
      throw new RegistryError(`token server ${realmUrl.host} sent a malformed answer`);
    }
    const token = reply.access_token ?? reply.token;
    if (!token) throw new RegistryError(`token server ${realmUrl.host} sent no token`);
    if (refresh && reply.refresh_token && !creds?.identityToken) {
      this.refreshTokens.set(host, reply.refresh_token);
    }
    const issued = reply.issued_at ? Date.parse(reply.issued_at) : NaN;
    const base = Number.isFinite(issued) ? Math.min(issued, started) : started;
    const ttl =
      (reply.expires_in && reply.expires_in > 0 ? reply.expires_in : DEFAULT_TOKEN_TTL_SEC) *
      1000;
    return { token, expiresAt: base + Math.max(ttl - EXPIRY_MARGIN_MS, ttl / 2) };
  }
}
