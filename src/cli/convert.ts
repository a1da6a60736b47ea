import * as fsp from "node:fs/promises";
import {
  convertLayer,
  convertOciLayout,
  type ConvertOptions,
  EstargzError,
} from "../estargz/mod.ts";
import { log } from "../log/mod.ts";
import {
  parsePlatform,
  RegistryClient,
  RegistryError,
  registryOptionsFromConfig,
} from "../registry/mod.ts";
import type { Command } from "./_command.ts";
import { convertImage, looksLikeImageReferences } from "./_image_convert.ts";
import { CommandError } from "./_command.ts";
import { configFromFlags } from "./_config.ts";
import { bool, int, str } from "./_flags.ts";
import { DEFAULT_CONFIG } from "./serve.ts";

async function readPrioritized(file: string | undefined): Promise<string[] | undefined> {
  if (!file) return undefined;
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    throw new CommandError(`cannot read prioritized files list: ${(err as Error).message}`);
  }
  return text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

/** `stargz convert`: one layer (tar, tar.gz, tar.zst) or a whole OCI layout to eStargz. */
export const convertCommand: Command = {
  name: "convert",
  summary: "convert a layer tar, an OCI image layout or a registry image to eStargz",
  usage: "[--zstdchunked] [--level N] [--chunk-size N] [--min-chunk-size N] " +
    "[--prioritized-files FILE] [--oci-layout] [--platform P] IN OUT  (IN OUT: files, or SRC_REF DST_REF)",
  flags: [
    { name: "zstdchunked", kind: "bool", help: "write zstd:chunked instead of gzip eStargz" },
    {
      name: "level",
      kind: "int",
      help: "compression level (default 9 for gzip, 3 for zstd)",
      valueName: "N",
    },
    {
      name: "chunk-size",
      kind: "int",
      default: 4 << 20,
      help: "largest chunk of a file in one compressed member",
      valueName: "N",
    },
    {
      name: "min-chunk-size",
      kind: "int",
      default: 0,
      help: "pack files smaller than this into the previous member (0 = off)",
      valueName: "N",
    },
    {
      name: "prioritized-files",
      kind: "string",
      help: "file listing paths (one a line) to place first, before .prefetch.landmark",
      valueName: "FILE",
    },
    {
      name: "oci-layout",
      kind: "bool",
      help: "IN and OUT are OCI image layout directories; convert every layer",
    },
    {
      name: "platform",
      kind: "string",
      help: "with image references (SRC_REF DST_REF): convert only this platform (default: all)",
      valueName: "OS/ARCH[/VARIANT]",
    },
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "with image references: daemon configuration whose [resolver] hosts to use",
      valueName: "FILE",
    },
    {
      name: "workers",
      kind: "int",
      help: "compression workers (default: number of cores, at most 4)",
      valueName: "N",
    },
  ],
  async run(flags) {
    const [input, output, ...extra] = flags.positional;
    if (!input || !output || extra.length) {
      throw new CommandError("convert needs exactly two arguments: IN OUT", 2);
    }
    const opts: ConvertOptions = {
      format: bool(flags, "zstdchunked") ? "zstd" : "gzip",
      level: int(flags, "level"),
      chunkSize: int(flags, "chunk-size"),
      minChunkSize: int(flags, "min-chunk-size"),
      prioritizedFiles: await readPrioritized(str(flags, "prioritized-files")),
      workers: int(flags, "workers"),
    };
    try {
      if (!bool(flags, "oci-layout") && await looksLikeImageReferences(input, output)) {
        const p = str(flags, "platform");
        const config = await configFromFlags(flags);
        const registry = new RegistryClient(await registryOptionsFromConfig(config, log));
        const r = await convertImage(registry, input, output, {
          ...opts,
          ...(p ? { platform: parsePlatform(p) } : {}),
        });
        console.log(JSON.stringify(r));
        return 0;
      }
      if (bool(flags, "oci-layout")) {
        const r = await convertOciLayout(input, output, opts);
        console.log(JSON.stringify(r));
        return 0;
      }
      const r = await convertLayer(input === "-" ? process.stdin : input, output, opts);
      console.log(JSON.stringify({
        digest: r.digest,
        size: r.size,
        diffID: r.diffID,
        tocDigest: r.tocDigest,
        uncompressedSize: r.uncompressedSize,
      }));
      return 0;
    } catch (err) {
      if (
        err instanceof EstargzError || err instanceof RegistryError ||
        (err as NodeJS.ErrnoException)?.code === "ENOENT"
      ) {
        throw new CommandError((err as Error).message);
      }
      throw err;
    }
  },
};
