import { EstargzError, fileBlobReader, openBlob } from "../estargz/mod.ts";
import type { EstargzBlob } from "../estargz/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { str } from "./_flags.ts";

/** Opens the one positional BLOB argument, runs `use`, and maps library errors to exit 1. */
async function withBlob<T>(
  args: string[],
  expectedTocDigest: string | undefined,
  use: (blob: EstargzBlob) => Promise<T>,
): Promise<T> {
  if (args.length !== 1) throw new CommandError("expected exactly one argument: BLOB", 2);
  let reader;
  try {
    reader = await fileBlobReader(args[0]);
  } catch (err) {
    throw new CommandError(`cannot open ${args[0]}: ${(err as Error).message}`);
  }
  try {
    return await use(await openBlob(reader, { expectedTocDigest }));
  } catch (err) {
    if (err instanceof EstargzError) throw new CommandError(`${args[0]}: ${err.message}`);
    throw err;
  } finally {
    await reader.close();
  }
}

/** `stargz get-toc-digest BLOB`: prints the TOC digest of a local blob. */
export const getTocDigestCommand: Command = {
  name: "get-toc-digest",
  summary: "print the TOC digest of an eStargz / zstd:chunked blob",
  usage: "BLOB",
  flags: [],
  run: (flags) =>
    withBlob(flags.positional, undefined, (blob) => {
      console.log(blob.tocDigest);
      return Promise.resolve(0);
    }),
};

/** `stargz toc BLOB`: prints the TOC JSON of a local blob. */
export const tocCommand: Command = {
  name: "toc",
  summary: "print the TOC JSON of an eStargz / zstd:chunked blob",
  usage: "BLOB",
  flags: [],
  run: (flags) =>
    withBlob(flags.positional, undefined, async (blob) => {
      console.log(JSON.stringify(await blob.readToc(), null, "\t"));
      return 0;
    }),
};

/** `stargz verify BLOB`: checks footer, TOC digest and every chunk. */
export const verifyCommand: Command = {
  name: "verify",
  summary: "check a blob's footer, TOC digest and every chunk digest",
  usage: "[--toc-digest DIGEST] BLOB",
  flags: [
    {
      name: "toc-digest",
      kind: "string",
      help: "expected TOC digest (sha256:…)",
      valueName: "DIGEST",
    },
  ],
  run: (flags) =>
    withBlob(flags.positional, str(flags, "toc-digest"), async (blob) => {
      const chunks = await blob.verifyAll();
      console.log(JSON.stringify({
        format: blob.format,
        tocDigest: blob.tocDigest,
        entries: (await blob.readToc()).entries.length,
        chunks,
        ok: true,
      }));
      return 0;
    }),
};
