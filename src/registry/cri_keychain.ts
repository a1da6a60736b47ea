/**
 * The CRI keychain: the credentials kubelet hands to the image service with every `PullImage`,
 * kept per image repository (`registry/repository`) so the layers of that image can be fetched
 * lazily with them.
 *
 * Upstream keeps them in memory only, so remote layers cannot be mounted again after a restart
 * until kubelet pulls the image once more. Here they are kept in one file under the daemon root
 * (mode 0600, replaced atomically), dropped once no snapshot of the image remains, and a
 * registry token that is a JWT is not used after its `exp`.
 */
import * as fs from "node:fs/promises";
import * as v from "valibot";
import { jwtExpiry } from "./auth.ts";
import type { Credentials, Keychain } from "./keychain.ts";
import { decodeAuthField, normaliseKey } from "./keychain.ts";
import { parseReference } from "./reference.ts";

/** The CRI `AuthConfig` message (k8s.io/cri-api runtime.v1), as decoded from the wire. */
export const CriAuthConfig = v.object({
  username: v.optional(v.string(), ""),
  password: v.optional(v.string(), ""),
  auth: v.optional(v.string(), ""),
  server_address: v.optional(v.string(), ""),
  identity_token: v.optional(v.string(), ""),
  registry_token: v.optional(v.string(), ""),
});
/** The CRI `AuthConfig` message. */
export type CriAuthConfig = v.InferOutput<typeof CriAuthConfig>;

const StoredEntry = v.object({
  username: v.optional(v.string()),
  password: v.optional(v.string()),
  identityToken: v.optional(v.string()),
  registryToken: v.optional(v.string()),
  /** When the registry token stops being valid (ms since the epoch), from its JWT `exp`. */
  registryTokenExpiresAt: v.optional(v.number()),
});
type StoredEntry = v.InferOutput<typeof StoredEntry>;
const StoreFile = v.object({ version: v.literal(1), images: v.record(v.string(), StoredEntry) });

/** The key credentials are kept under: `registry/repository` of an image reference. */
export function imageKey(image: string): string {
  const ref = parseReference(image);
  return `${normaliseKey(ref.domain)}/${ref.repository}`;
}

function toEntry(auth: CriAuthConfig): StoredEntry | undefined {
  const e: StoredEntry = auth.auth ? { ...decodeAuthField(auth.auth) } : {};
  if (auth.username) e.username = auth.username;
  if (auth.password) e.password = auth.password;
  if (auth.identity_token) e.identityToken = auth.identity_token;
  if (auth.registry_token) {
    e.registryToken = auth.registry_token;
    const exp = jwtExpiry(auth.registry_token);
    if (exp !== undefined) e.registryTokenExpiresAt = exp;
  }
  return Object.keys(e).length > 0 ? e : undefined;
}

/** What of an entry is still usable at `now`; undefined when nothing is. */
function usable(e: StoredEntry, now: number): Credentials | undefined {
  const c: Credentials = {};
  if (e.username !== undefined) c.username = e.username;
  if (e.password !== undefined) c.password = e.password;
  if (e.identityToken) c.identityToken = e.identityToken;
  if (e.registryToken && (e.registryTokenExpiresAt ?? Infinity) > now) {
    c.registryToken = e.registryToken;
  }
  return Object.keys(c).length > 0 ? c : undefined;
}

/** A keychain fed by CRI `PullImage` requests and kept in `file`. */
export class CriKeychain implements Keychain {
  readonly name = "cri";
  private writing: Promise<void> = Promise.resolve();
  /** Pulls in flight per image key: their credentials must survive a sweep. */
  private readonly pulling = new Map<string, number>();

  private constructor(
    private readonly file: string,
    private readonly images: Map<string, StoredEntry>,
    private readonly now: () => number,
  ) {}

  /** Opens the keychain kept in `file` (missing: empty; unreadable: an error naming it). */
  static async open(file: string, now: () => number = Date.now): Promise<CriKeychain> {
    let text: string | undefined;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const images = new Map<string, StoredEntry>();
    if (text !== undefined) {
      let parsed;
      try {
        parsed = v.safeParse(StoreFile, JSON.parse(text));
      } catch {
        parsed = undefined;
      }
      if (!parsed?.success) throw new Error(`${file}: not a CRI credentials file`);
      for (const [k, e] of Object.entries(parsed.output.images)) images.set(k, e);
    }
    return new CriKeychain(file, images, now);
  }

  /** Image keys that have credentials (names only, for tests). */
  keys(): string[] {
    return [...this.images.keys()];
  }

  get(host: string, repository?: string): Promise<Credentials | undefined> {
    if (!repository) return Promise.resolve(undefined);
    const e = this.images.get(`${normaliseKey(host)}/${repository}`);
    return Promise.resolve(e ? usable(e, this.now()) : undefined);
  }

  /**
   * Runs `pull` (the proxied `PullImage`) with `auth` remembered for `image` meanwhile. When
   * the pull fails, the credentials the image had before are put back, so a pull with wrong
   * credentials does not break layers mounted with the right ones.
   */
  async duringPull<T>(
    image: string,
    auth: CriAuthConfig | undefined,
    pull: () => Promise<T>,
  ): Promise<T> {
    let key;
    try {
      key = imageKey(image);
    } catch {
      // Not a reference: the backend will refuse the pull with its own error.
      return await pull();
    }
    const entry = auth ? toEntry(auth) : undefined;
    if (!entry) return await pull();
    const before = this.images.get(key);
    this.pulling.set(key, (this.pulling.get(key) ?? 0) + 1);
    try {
      this.images.set(key, entry);
      await this.save();
      try {
        return await pull();
      } catch (err) {
        if (this.images.get(key) === entry) {
          if (before) this.images.set(key, before);
          else this.images.delete(key);
          await this.save();
        }
        throw err;
      }
    } finally {
      const n = (this.pulling.get(key) ?? 1) - 1;
      if (n > 0) this.pulling.set(key, n);
      else this.pulling.delete(key);
    }
  }

  /**
   * Drops the credentials of every image not in `inUse` (image references of the snapshots
   * that remain) and not being pulled, and those whose only secret is an expired token.
   */
  async sweep(inUse: Iterable<string>): Promise<void> {
    const keep = new Set<string>();
    for (const ref of inUse) {
      try {
        keep.add(imageKey(ref));
      } catch {
        // a label that is not a reference names no image we hold credentials for
      }
    }
    let changed = false;
    const now = this.now();
    for (const [k, e] of this.images) {
      if (this.pulling.has(k)) continue;
      if (keep.has(k) && usable(e, now)) continue;
      this.images.delete(k);
      changed = true;
    }
    if (changed) await this.save();
  }

  /** Writes the file: a 0600 temporary file renamed over it, one write at a time. */
  private save(): Promise<void> {
    const body = JSON.stringify({ version: 1, images: Object.fromEntries(this.images) });
    const next = this.writing.then(async () => {
      const tmp = `${this.file}.tmp`;
      await fs.writeFile(tmp, body, { mode: 0o600 });
      // writeFile keeps the mode of an existing file; a leftover tmp must not widen it.
      await fs.chmod(tmp, 0o600);
      await fs.rename(tmp, this.file);
    });
    this.writing = next.catch(() => {});
    return next;
  }
}
