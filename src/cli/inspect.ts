/**
 * `stargz inspect REF`: what an operator runs to answer "will this image be lazily pulled?".
 * Prints the resolved manifest and, per layer, whether its blob ends in an eStargz footer
 * (probed with one small range read) and its TOC digest annotation.
 */
import { FooterError, parseFooter, TOC_DIGEST_ANNOTATION } from "../estargz/mod.ts";
import {
  type Descriptor,
  formatPlatform,
  formatReference,
  parsePlatform,
  parseReference,
  type Platform,
  RegistryClient,
  RegistryError,
  registryOptionsFromConfig,
} from "../registry/mod.ts";
import { log } from "../log/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { configFromFlags } from "./_config.ts";
import { str } from "./_flags.ts";
import { DEFAULT_CONFIG } from "./serve.ts";

/** The largest footer (gzip eStargz, 51 bytes): one read of this many tail bytes finds any. */
const FOOTER_PROBE_SIZE = 51;

/** One layer in the `inspect` output. */
export interface InspectedLayer {
  digest: string;
  size: number;
  mediaType: string;
  /** True when the blob ends in an eStargz (or zstd:chunked) footer. */
  estargz: boolean;
  /** `gzip`, `legacy-gzip` or `zstd` for eStargz layers. */
  format?: string;
  /** The `containerd.io/snapshot/stargz/toc.digest` annotation, if any. */
  tocDigest?: string;
  /** Why the layer is not eStargz (when `estargz` is false). */
  reason?: string;
}

/** The `inspect` output. */
export interface InspectResult {
  reference: string;
  /** What the reference points to (an index or a manifest). */
  digest: string;
  mediaType: string;
  manifestDigest: string;
  manifestMediaType: string;
  platform?: string;
  layers: InspectedLayer[];
  /** True when every layer is eStargz with a TOC digest: the snapshotter can mount it lazily. */
  lazy: boolean;
}

async function probeLayer(
  client: RegistryClient,
  ref: string,
  layer: Descriptor,
): Promise<InspectedLayer> {
  const out: InspectedLayer = {
    digest: layer.digest,
    size: layer.size,
    mediaType: layer.mediaType,
    estargz: false,
  };
  const toc = layer.annotations?.[TOC_DIGEST_ANNOTATION];
  if (toc) out.tocDigest = toc;
  const start = Math.max(0, layer.size - FOOTER_PROBE_SIZE);
  try {
    const tail = await client.fetchBlobRange(ref, layer.digest, start, layer.size);
    const footer = parseFooter(tail, layer.size);
    out.estargz = true;
    out.format = footer.format;
  } catch (err) {
    if (!(err instanceof FooterError)) throw err;
    out.reason = err.message;
  }
  return out;
}

/** Resolves `ref` for `platform` and probes every layer. */
export async function inspectImage(
  client: RegistryClient,
  ref: string,
  platform?: Platform,
): Promise<InspectResult> {
  const img = await client.resolve(ref, platform ? { platform } : {});
  const name = formatReference(img.ref);
  const layers = await Promise.all(img.layers.map((l) => probeLayer(client, name, l)));
  return {
    reference: name,
    digest: img.digest,
    mediaType: img.mediaType,
    manifestDigest: img.manifestDigest,
    manifestMediaType: img.manifestMediaType,
    ...(img.platform ? { platform: formatPlatform(img.platform) } : {}),
    layers,
    lazy: layers.length > 0 && layers.every((l) => l.estargz && l.tocDigest !== undefined),
  };
}

/** `stargz inspect`. */
export const inspectCommand: Command = {
  name: "inspect",
  summary: "show an image's layers and whether each is eStargz (JSON)",
  usage: "[--platform OS/ARCH[/VARIANT]] [--config FILE] REF",
  flags: [
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "daemon configuration whose [resolver] mirrors and [blob] settings to use",
      valueName: "FILE",
    },
    {
      name: "platform",
      kind: "string",
      help: "platform to pick from an index (default: this host's)",
      valueName: "PLATFORM",
    },
  ],
  async run(flags) {
    const [ref, ...extra] = flags.positional;
    if (!ref || extra.length) throw new CommandError("inspect needs exactly one argument: REF", 2);
    const config = await configFromFlags(flags);
    try {
      parseReference(ref);
      const p = str(flags, "platform");
      const client = new RegistryClient(await registryOptionsFromConfig(config, log));
      const result = await inspectImage(client, ref, p ? parsePlatform(p) : undefined);
      console.log(JSON.stringify(result, null, 2));
      return 0;
    } catch (err) {
      if (err instanceof RegistryError) throw new CommandError(err.message);
      throw err;
    }
  },
};
