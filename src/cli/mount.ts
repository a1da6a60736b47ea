import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import type { BlobReader } from "../estargz/mod.ts";
import { fileBlobReader } from "../estargz/mod.ts";
import { mountBlob, rangeSourceOf } from "../fs/mod.ts";
import type { RangeSource } from "../fs/mod.ts";
import { TOC_DIGEST_LABEL } from "../labels/mod.ts";
import { log, parseLogLevel, setLogLevel } from "../log/mod.ts";
import {
  type Digest,
  isDigest,
  parseDigest,
  RegistryClient,
  registryOptionsFromConfig,
} from "../registry/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { configFromFlags } from "./_config.ts";
import { bool, str } from "./_flags.ts";
import { DEFAULT_CONFIG } from "./serve.ts";

/** `sha256:…` of a local file, streamed. */
async function fileDigest(file: string): Promise<Digest> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Uint8Array);
  }
  return parseDigest(`sha256:${h.digest("hex")}`);
}

async function exists(p: string): Promise<boolean> {
  return await fs.stat(p).then(() => true, () => false);
}

/** Resolves when SIGINT/SIGTERM arrives or `closed` settles. */
function untilStopped(closed: Promise<void>): Promise<string> {
  return new Promise((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
    closed.then(() => resolve("unmounted"), () => resolve("unmounted"));
  });
}

/**
 * `stargz mount SOURCE MOUNTPOINT`: mounts one eStargz layer in the foreground, from a local blob
 * file or from a registry (`REF --layer DIGEST`), until SIGINT/SIGTERM or an outside unmount.
 */
export const mountCommand: Command = {
  name: "mount",
  summary: "mount one eStargz layer (local file or registry) in the foreground",
  usage: "[flags] (BLOB_FILE | REF --layer DIGEST) MOUNTPOINT",
  flags: [
    {
      name: "layer",
      kind: "string",
      help: "digest of the layer when SOURCE is an image reference",
      valueName: "DIGEST",
    },
    {
      name: "toc-digest",
      kind: "string",
      help:
        "refuse the layer unless its TOC has this digest (default: the manifest's annotation, if any)",
      valueName: "DIGEST",
    },
    { name: "no-background-fetch", kind: "bool", help: "fetch only what is read (and prefetched)" },
    { name: "no-prefetch", kind: "bool", help: "do not prefetch" },
    {
      name: "cache-dir",
      kind: "string",
      help: "chunk cache directory (default: a temporary one, removed at exit)",
      valueName: "DIR",
    },
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "daemon configuration for registry, cache and FUSE settings",
      valueName: "FILE",
    },
    {
      name: "log-level",
      kind: "string",
      default: "info",
      help: "logging level",
      valueName: "LEVEL",
    },
  ],
  async run(flags) {
    const level = parseLogLevel(str(flags, "log-level") ?? "info");
    if (!level) throw new CommandError(`invalid --log-level "${str(flags, "log-level")}"`, 2);
    setLogLevel(level);
    if (flags.positional.length !== 2) throw new CommandError("expected SOURCE and MOUNTPOINT", 2);
    const [source, mountpoint] = flags.positional;
    const config = await configFromFlags(flags);
    if (!(await exists(mountpoint))) {
      throw new CommandError(`mountpoint ${mountpoint} does not exist`);
    }

    let blob: RangeSource & BlobReader;
    let tail: Uint8Array | undefined;
    let digest: Digest;
    let tocDigest = str(flags, "toc-digest");
    let closeBlob = async () => {};
    const layerDigest = str(flags, "layer");
    if (layerDigest === undefined) {
      if (!(await exists(source))) {
        throw new CommandError(
          `${source}: no such file (for a registry image, pass --layer DIGEST)`,
        );
      }
      const reader = await fileBlobReader(source);
      blob = Object.assign(rangeSourceOf(reader), { read: reader.read.bind(reader) });
      closeBlob = () => reader.close();
      digest = await fileDigest(source);
    } else {
      if (!isDigest(layerDigest)) {
        throw new CommandError(`--layer ${layerDigest}: not a sha256 or sha512 digest`);
      }
      const registry = new RegistryClient(await registryOptionsFromConfig(config, log));
      if (tocDigest === undefined) {
        const image = await registry.resolve(source);
        tocDigest = image.layers.find((l) => l.digest === layerDigest)?.annotations
          ?.[TOC_DIGEST_LABEL];
      }
      const remote = await registry.openBlob(source, layerDigest);
      tail = remote.takeTail();
      blob = remote;
      digest = layerDigest;
    }
    if (tocDigest === undefined) {
      log.warn("no TOC digest: mounting without verifying the TOC", { source });
    }

    const tmpCache = str(flags, "cache-dir") === undefined
      ? await fs.mkdtemp(path.join(os.tmpdir(), "stargz-mount-cache-"))
      : undefined;
    try {
      const mount = await mountBlob(mountpoint, {
        digest,
        source: blob,
        expectedTocDigest: tocDigest,
        tail,
        cacheDir: tmpCache ?? str(flags, "cache-dir")!,
        config,
        log,
        prefetch: !bool(flags, "no-prefetch"),
        background: !bool(flags, "no-background-fetch"),
      });
      log.info("mounted", { source, mountpoint, layer: digest, tocDigest: mount.tocDigest });
      const why = await untilStopped(mount.closed);
      log.info("unmounting", { reason: why });
      await mount.unmount();
      return 0;
    } finally {
      await closeBlob();
      if (tmpCache) await fs.rm(tmpCache, { recursive: true, force: true });
    }
  },
};
