import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { EstargzError } from "../estargz/mod.ts";
import { ProfileStore } from "../fs/mod.ts";
import { parsePlatform, RegistryClient, RegistryError } from "../registry/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { convertImage } from "./_image_convert.ts";
import { bool, str } from "./_flags.ts";

async function readList(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    throw new CommandError(`cannot read prefetch list: ${(err as Error).message}`);
  }
  return text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

/**
 * The recorded profiles of a daemon root, by layer digest, read once (the daemon may keep
 * writing its store meanwhile; WAL lets both work).
 */
async function readProfiles(root: string): Promise<Map<string, string[]>> {
  const db = path.join(root, "prefetch_profiles.db");
  if (!(await fsp.stat(db).then(() => true, () => false))) {
    throw new CommandError(`${db}: no prefetch profiles under this root`);
  }
  const store = ProfileStore.open(root, Number.MAX_SAFE_INTEGER);
  try {
    const out = new Map<string, string[]>();
    for (const p of store.list()) {
      const files = store.files(p.layer);
      if (files) out.set(p.layer, files);
    }
    return out;
  } finally {
    store.close();
  }
}

/**
 * `stargz optimize`: what upstream's `ctr-remote image optimize` produces, without running the
 * container: each layer is converted to eStargz with the files the workload reads placed first,
 * before `.prefetch.landmark`, so that any snapshotter prefetches them at mount.
 */
export const optimizeCommand: Command = {
  name: "optimize",
  summary: "rewrite a registry image as eStargz with its start-up files first (prefetch landmark)",
  usage: "(--profile ROOT | --prefetch-list FILE) [--zstdchunked] [--platform P] SRC_REF DST_REF",
  flags: [
    {
      name: "profile",
      kind: "string",
      help: "daemon root whose learned prefetch profiles (per layer digest) order each layer",
      valueName: "ROOT",
    },
    {
      name: "prefetch-list",
      kind: "string",
      help: "file listing paths (one a line) to place first in every layer that holds them",
      valueName: "FILE",
    },
    { name: "zstdchunked", kind: "bool", help: "write zstd:chunked instead of gzip eStargz" },
    {
      name: "platform",
      kind: "string",
      help: "optimize only this platform (default: all)",
      valueName: "OS/ARCH[/VARIANT]",
    },
  ],
  async run(flags) {
    const [src, dst, ...extra] = flags.positional;
    if (!src || !dst || extra.length) {
      throw new CommandError("optimize needs exactly two arguments: SRC_REF DST_REF", 2);
    }
    const root = str(flags, "profile");
    const listFile = str(flags, "prefetch-list");
    if ((root === undefined) === (listFile === undefined)) {
      throw new CommandError("optimize needs one of --profile ROOT or --prefetch-list FILE", 2);
    }
    const profiles = root === undefined ? undefined : await readProfiles(root);
    const list = listFile === undefined ? undefined : await readList(listFile);
    const p = str(flags, "platform");
    try {
      const r = await convertImage(new RegistryClient(), src, dst, {
        format: bool(flags, "zstdchunked") ? "zstd" : "gzip",
        prioritizedFiles: list,
        prioritizedFilesOf: profiles && ((digest) => profiles.get(digest)),
        ...(p ? { platform: parsePlatform(p) } : {}),
      });
      console.log(JSON.stringify(r));
      return 0;
    } catch (err) {
      if (err instanceof EstargzError || err instanceof RegistryError) {
        throw new CommandError((err as Error).message);
      }
      throw err;
    }
  },
};
