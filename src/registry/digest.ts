/**
 * Content digests as the OCI image spec defines them (descriptor.md, "Digests"):
 *
 *   digest    ::= algorithm ":" encoded
 *   algorithm ::= component (separator component)*     component ::= [a-z0-9]+
 *   separator ::= [+._-]                               encoded   ::= [a-zA-Z0-9=_-]+
 *
 * The grammar admits algorithms nobody can verify (`multihash+base58:…`); a {@link Digest} is
 * narrower: one of the two registered algorithms with its exact lowercase hex length. Only a
 * Digest may go into a registry URL, a file name or a metric label, so a label such as
 * `../../etc/passwd` or `sha256:abc?x=1#y` never reaches any of them.
 */
import * as v from "valibot";
import { InvalidDigestError } from "./errors.ts";

/** Hex length of each algorithm the OCI image spec registers. */
const REGISTERED: Record<string, number> = { sha256: 64, sha512: 128 };

const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Why `s` is not a registered digest, or undefined when it is one. */
function digestProblem(s: string): string | undefined {
  if (!GRAMMAR.test(s)) return "not algorithm:encoded";
  const colon = s.indexOf(":");
  const algorithm = s.slice(0, colon);
  const hex = s.slice(colon + 1);
  const want = REGISTERED[algorithm];
  if (want === undefined) return `unsupported algorithm ${algorithm}`;
  if (hex.length !== want || !/^[0-9a-f]+$/.test(hex)) {
    return `${algorithm} needs ${want} lowercase hex digits`;
  }
  return undefined;
}

/** Valibot schema of a registered digest (`sha256:<64 hex>` or `sha512:<128 hex>`). */
export const DigestSchema = v.pipe(
  v.string(),
  v.check((s) => digestProblem(s) === undefined, "not a sha256 or sha512 digest"),
  v.brand("Digest"),
);

/** A parsed digest: a string only {@link parseDigest} (or the schema) hands out. */
export type Digest = v.InferOutput<typeof DigestSchema>;

/** The registered algorithms, for hashing with node:crypto. */
export type DigestAlgorithm = "sha256" | "sha512";

/** Parses `s`; throws {@link InvalidDigestError} with the reason when it is not a Digest. */
export function parseDigest(s: string): Digest {
  const problem = digestProblem(s);
  if (problem !== undefined) {
    throw new InvalidDigestError(`invalid digest ${JSON.stringify(s.slice(0, 200))}: ${problem}`);
  }
  return s as Digest;
}

/** True when `s` is a registered digest. */
export function isDigest(s: string): s is Digest {
  return digestProblem(s) === undefined;
}

/** The algorithm of a parsed digest. */
export function digestAlgorithm(d: Digest): DigestAlgorithm {
  return d.slice(0, d.indexOf(":")) as DigestAlgorithm;
}

/** The hex part of a parsed digest (safe as a file name). */
export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(":") + 1);
}
