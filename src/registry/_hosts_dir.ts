/**
 * containerd's registry host directories (`certs.d/<registry>/hosts.toml`, containerd 1.6's
 * remotes/docker/config): `server`, `[host."…"]` tables in file order, `capabilities`, `ca`,
 * `client`, `skip_verify`, `header` and `override_path`, relative paths taken from the
 * registry's directory. A directory without hosts.toml is read the docker way: `*.crt` are CAs,
 * `*.cert` with a matching `*.key` are client pairs. Certificates are read here, once.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { parse as parseToml } from "smol-toml";
import * as v from "valibot";
import type { TlsOptions } from "../runtime/mod.ts";
import { RegistryError } from "./errors.ts";
import type { HostCapabilities, HostsFile, MirrorConfig } from "./hosts.ts";

/** A hosts directory or file that cannot be used. */
export class HostsDirError extends RegistryError {
  override name = "HostsDirError";
}

const StringOrList = v.union([v.string(), v.array(v.string())], "a string or list of strings");
const HostFields = {
  capabilities: v.optional(
    v.array(v.picklist(["pull", "resolve", "push"], "pull, resolve or push")),
  ),
  ca: v.optional(StringOrList),
  client: v.optional(
    v.union([
      v.string(),
      v.array(v.union([v.string(), v.tuple([v.string(), v.string()])])),
    ], "a file, or a list of files and [cert, key] pairs"),
  ),
  skip_verify: v.optional(v.boolean("true or false")),
  header: v.optional(v.record(v.string(), StringOrList)),
  override_path: v.optional(v.boolean("true or false")),
};
const HostTable = v.object(HostFields);
// Unknown keys are ignored, as containerd's decoder ignores them.
const HostsToml = v.object({
  server: v.optional(v.string("a URL")),
  host: v.optional(v.record(v.string(), HostTable)),
  ...HostFields,
});

/** `host_port_` (containerd's directory name for `host:port`) → `host:port`. */
function registryOfDir(name: string): string {
  const m = /^(.+)_(\d+)_$/.exec(name);
  return m ? `${m[1]}:${m[2]}` : name;
}

async function readPem(file: string, what: string): Promise<string> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    throw new HostsDirError(`${what} ${file}: ${(err as Error).message}`);
  }
}

function capabilitiesOf(list: readonly string[] | undefined): HostCapabilities | undefined {
  if (!list?.length) return undefined;
  return {
    pull: list.includes("pull"),
    resolve: list.includes("resolve"),
    push: list.includes("push"),
  };
}

async function tlsOf(
  table: v.InferOutput<typeof HostTable>,
  dir: string,
): Promise<TlsOptions | undefined> {
  const abs = (p: string) => path.resolve(dir, p);
  const caFiles = table.ca === undefined
    ? []
    : typeof table.ca === "string"
    ? [table.ca]
    : table.ca;
  const pairs: [string, string | undefined][] = [];
  if (typeof table.client === "string") pairs.push([table.client, undefined]);
  else for (const c of table.client ?? []) pairs.push(typeof c === "string" ? [c, undefined] : c);
  if (!caFiles.length && !pairs.length && table.skip_verify === undefined) return undefined;
  const ca = await Promise.all(caFiles.map((f) => readPem(abs(f), "CA certificate")));
  let client: TlsOptions["client"];
  if (pairs.length) {
    // One client identity is presented per connection; containerd's Go TLS picks the first too.
    const [certFile, keyFile] = pairs[0];
    const cert = await readPem(abs(certFile), "client certificate");
    client = { cert, key: keyFile ? await readPem(abs(keyFile), "client key") : cert };
  }
  return {
    ...(ca.length ? { ca } : {}),
    ...(client ? { client } : {}),
    ...(table.skip_verify !== undefined ? { skipVerify: table.skip_verify } : {}),
  };
}

async function hostOf(
  table: v.InferOutput<typeof HostTable>,
  dir: string,
): Promise<Omit<MirrorConfig, "host">> {
  const capabilities = capabilitiesOf(table.capabilities);
  const tls = await tlsOf(table, dir);
  return {
    ...(capabilities ? { capabilities } : {}),
    ...(tls ? { tls } : {}),
    ...(table.header ? { header: table.header } : {}),
    ...(table.override_path ? { overridePath: true } : {}),
  };
}

/** `https://` unless the URL says otherwise (containerd's default for hosts.toml entries). */
function withScheme(url: string): string {
  return /^https?:\/\//.test(url) ? url : `https://${url}`;
}

/** Parses one registry's `hosts.toml` (`dir` resolves relative certificate paths). */
export async function parseHostsToml(text: string, dir: string, file: string): Promise<HostsFile> {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    throw new HostsDirError(`${file}: ${(err as Error).message.split("\n")[0]}`);
  }
  const parsed = v.safeParse(HostsToml, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const key = v.getDotPath(issue) ?? "";
    throw new HostsDirError(`${file}: ${key ? `${key}: ` : ""}${issue.message}`);
  }
  const toml = parsed.output;
  const hosts: MirrorConfig[] = [];
  // smol-toml keeps tables in file order, which is the order containerd tries them in.
  for (const [url, table] of Object.entries(toml.host ?? {})) {
    hosts.push({ host: withScheme(url), ...(await hostOf(table, dir)) });
  }
  const server = await hostOf(toml, dir);
  return { hosts, server: toml.server ? { host: withScheme(toml.server), ...server } : server };
}

async function certFiles(dir: string, names: string[]): Promise<HostsFile> {
  const ca = names.filter((n) => n.endsWith(".crt")).sort();
  const certs = names.filter((n) => n.endsWith(".cert")).sort();
  const client: (string | [string, string])[] = certs.map((c) => {
    const key = `${c.slice(0, -".cert".length)}.key`;
    return names.includes(key) ? [c, key] : c;
  });
  const table = { ...(ca.length ? { ca } : {}), ...(client.length ? { client } : {}) };
  return { hosts: [], server: await hostOf(table, dir) };
}

/**
 * Loads every registry directory under `root` (containerd's `config_path`). A missing root
 * is an empty set of directories, as it is for containerd.
 */
export async function loadHostsDir(root: string): Promise<Record<string, HostsFile>> {
  let entries;
  try {
    entries = await fs.readdir(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new HostsDirError(`${root}: ${(err as Error).message}`);
  }
  const out: Record<string, HostsFile> = {};
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const dir = path.join(root, e.name);
    const names = await fs.readdir(dir);
    const registry = registryOfDir(e.name);
    // containerd looks for `host_port_` before `host:port`: the former wins when both exist.
    if (out[registry] && registry === e.name) continue;
    const file = path.join(dir, "hosts.toml");
    out[registry] = names.includes("hosts.toml")
      ? await parseHostsToml(await fs.readFile(file, "utf8"), dir, file)
      : await certFiles(dir, names);
  }
  return out;
}
