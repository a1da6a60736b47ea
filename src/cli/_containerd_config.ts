/**
 * The edit install.sh makes to containerd's config.toml, done on the parsed TOML instead of
 * with grep and cat: add (or remove) the `stargz` proxy plugin and, for Kubernetes, point the
 * CRI plugin at it. containerd's table names depend on the file's `version`:
 *
 *   version 1 (no key)  [plugins.cri.containerd]                      snapshotter, disable_snapshot_annotations
 *   version 2           [plugins."io.containerd.grpc.v1.cri".containerd]   (containerd 1.5 – 1.7)
 *   version 3           [plugins."io.containerd.cri.v1.images"]            (containerd 2.x)
 *
 * `[proxy_plugins.stargz]` is the same in every version. Rewriting drops the file's comments
 * (smol-toml keeps none), so the edit reports `changed: false` and the caller leaves the file
 * alone whenever the keys already hold the wanted values: a second install touches nothing.
 */
import { parse, stringify } from "smol-toml";

/** A containerd config file that is not valid TOML or has an unexpected shape. */
export class ContainerdConfigError extends Error {
  override name = "ContainerdConfigError";
}

/** What to put into containerd's config. */
export interface ContainerdEdit {
  /** The snapshotter's gRPC socket. */
  address: string;
  /** Also make the CRI plugin use stargz (and pass the image annotations it needs). */
  kubernetes: boolean;
  /** The `version` written into a new (empty or missing) file. */
  newFileVersion: 2 | 3;
}

/** The result of an edit: the new text and whether it differs from the old. */
export interface EditResult {
  text: string;
  changed: boolean;
}

type Table = Record<string, unknown>;

function isTable(x: unknown): x is Table {
  return typeof x === "object" && x !== null && !Array.isArray(x) && !(x instanceof Date);
}

/** The table at `path` under `root`, created on the way when `create`. */
function tableAt(root: Table, path: readonly string[], create: boolean): Table | undefined {
  let t = root;
  for (const [i, key] of path.entries()) {
    const next = t[key];
    if (next === undefined) {
      if (!create) return undefined;
      t[key] = {};
    } else if (!isTable(next)) {
      throw new ContainerdConfigError(`"${path.slice(0, i + 1).join(".")}" is not a table`);
    }
    t = t[key] as Table;
  }
  return t;
}

function parseText(text: string): Table {
  try {
    return parse(text) as Table;
  } catch (err) {
    throw new ContainerdConfigError(`not valid TOML: ${(err as Error).message.split("\n")[0]}`);
  }
}

function versionOf(doc: Table): number {
  const v = doc.version ?? 1;
  if (v !== 1 && v !== 2 && v !== 3) {
    throw new ContainerdConfigError(`unsupported config version ${JSON.stringify(v)}`);
  }
  return v;
}

/** Where the CRI plugin's snapshotter keys live in a config of `version`. */
export function criSnapshotterTable(version: number): string[] {
  if (version === 3) return ["plugins", "io.containerd.cri.v1.images"];
  if (version === 2) return ["plugins", "io.containerd.grpc.v1.cri", "containerd"];
  return ["plugins", "cri", "containerd"];
}

/** Adds the proxy plugin (and the CRI keys with `kubernetes`) to the config `text`. */
export function addStargz(text: string, edit: ContainerdEdit): EditResult {
  const blank = text.trim() === "";
  const doc = blank ? { version: edit.newFileVersion } : parseText(text);
  const version = versionOf(doc);
  let changed = blank;
  const set = (t: Table, key: string, value: unknown) => {
    if (t[key] !== value) {
      t[key] = value;
      changed = true;
    }
  };
  const plugin = tableAt(doc, ["proxy_plugins", "stargz"], true)!;
  set(plugin, "type", "snapshot");
  set(plugin, "address", edit.address);
  if (edit.kubernetes) {
    const cri = tableAt(doc, criSnapshotterTable(version), true)!;
    set(cri, "snapshotter", "stargz");
    set(cri, "disable_snapshot_annotations", false);
  }
  return { text: changed ? stringify(doc) + "\n" : text, changed };
}

/**
 * Removes the proxy plugin, and the CRI snapshotter key when it names stargz (containerd then
 * uses its default snapshotter again); everything else is kept.
 */
export function removeStargz(text: string): EditResult {
  if (text.trim() === "") return { text, changed: false };
  const doc = parseText(text);
  let changed = false;
  const proxies = tableAt(doc, ["proxy_plugins"], false);
  if (proxies && "stargz" in proxies) {
    delete proxies.stargz;
    if (Object.keys(proxies).length === 0) delete doc.proxy_plugins;
    changed = true;
  }
  const cri = tableAt(doc, criSnapshotterTable(versionOf(doc)), false);
  if (cri?.snapshotter === "stargz") {
    delete cri.snapshotter;
    changed = true;
  }
  return { text: changed ? stringify(doc) + "\n" : text, changed };
}
