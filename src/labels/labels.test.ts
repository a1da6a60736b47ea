import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  CRI_IMAGE_LAYERS_LABEL,
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  InvalidLabelError,
  MAX_LISTED_LAYERS,
  PREFETCH_SIZE_LABEL,
  REMOTE_URLS_LABEL,
  remoteSource,
  STARGZ_DIGEST_LABEL,
  STARGZ_LAYERS_LABEL,
  STARGZ_REFERENCE_LABEL,
  TOC_DIGEST_LABEL,
} from "./mod.ts";

const D1 = "sha256:" + "a".repeat(64);
const D2 = "sha512:" + "b".repeat(128);
const REF = "127.0.0.1:5000/app:v1";

function stargz(extra: Record<string, string> = {}): Record<string, string> {
  return { [STARGZ_REFERENCE_LABEL]: REF, [STARGZ_DIGEST_LABEL]: D1, ...extra };
}

/** Labels that name a source but must never be acted on, with the label the refusal names. */
const HOSTILE: [string, Record<string, string>, string][] = [
  ["a path as digest", stargz({ [STARGZ_DIGEST_LABEL]: "../../../../etc/passwd" }), "digest"],
  ["a query and fragment", stargz({ [STARGZ_DIGEST_LABEL]: "sha256:abc?x=1#y" }), "digest"],
  ["a newline", stargz({ [STARGZ_DIGEST_LABEL]: `${D1}\nx` }), "digest"],
  ["uppercase hex", stargz({ [STARGZ_DIGEST_LABEL]: D1.toUpperCase() }), "digest"],
  ["sha256 too short", stargz({ [STARGZ_DIGEST_LABEL]: "sha256:" + "a".repeat(63) }), "digest"],
  [
    "an unregistered algorithm",
    stargz({ [STARGZ_DIGEST_LABEL]: "md5:" + "a".repeat(32) }),
    "digest",
  ],
  ["a quote (metric label)", stargz({ [STARGZ_DIGEST_LABEL]: `${D1}"} 1\nx{a="` }), "digest"],
  ["a bad neighbour", stargz({ [STARGZ_LAYERS_LABEL]: `${D1},../x` }), "layers"],
  [
    "too many neighbours",
    stargz({ [STARGZ_LAYERS_LABEL]: Array(MAX_LISTED_LAYERS + 1).fill(D1).join(",") }),
    "layers",
  ],
  [
    "a reference with a path",
    stargz({ [STARGZ_REFERENCE_LABEL]: "127.0.0.1:5000/../x" }),
    "reference",
  ],
  ["a reference with a query", stargz({ [STARGZ_REFERENCE_LABEL]: `${REF}?x=1` }), "reference"],
  ["a reference with spaces", stargz({ [STARGZ_REFERENCE_LABEL]: `${REF} x` }), "reference"],
  ["a file: url", stargz({ [REMOTE_URLS_LABEL]: "file:///etc/passwd" }), "urls"],
  ["a gopher url", stargz({ [REMOTE_URLS_LABEL]: "https://a/b,gopher://x" }), "urls"],
  ["a bad TOC digest", stargz({ [TOC_DIGEST_LABEL]: "sha256:../x" }), "toc.digest"],
  ["a bad prefetch size", stargz({ [PREFETCH_SIZE_LABEL]: "1e99" }), "prefetch"],
  [
    "a bad CRI digest",
    {
      [CRI_IMAGE_REF_LABEL]: REF,
      [CRI_LAYER_DIGEST_LABEL]: "/v2/other/blobs/x",
      [STARGZ_REFERENCE_LABEL]: REF,
      [STARGZ_DIGEST_LABEL]: D1,
    },
    "cri.layer-digest",
  ],
];

describe("remoteSource", () => {
  it("reads valid stargz and CRI labels, parsed", () => {
    assert.deepEqual(
      remoteSource(stargz({
        [STARGZ_LAYERS_LABEL]: `${D1},${D2},`,
        [REMOTE_URLS_LABEL]: "https://mirror.example/blob",
        [TOC_DIGEST_LABEL]: D1,
        [PREFETCH_SIZE_LABEL]: "1024",
      })),
      {
        ref: REF,
        digest: D1,
        layers: [D1, D2],
        urls: ["https://mirror.example/blob"],
        tocDigest: D1,
        prefetchSize: 1024,
      },
    );
    assert.deepEqual(
      remoteSource({
        [CRI_IMAGE_REF_LABEL]: "python",
        [CRI_LAYER_DIGEST_LABEL]: D2,
        [CRI_IMAGE_LAYERS_LABEL]: D2,
      }),
      { ref: "python", digest: D2, layers: [D2], urls: [] },
    );
  });

  it("is undefined without both a reference and a digest", () => {
    assert.equal(remoteSource({}), undefined);
    assert.equal(remoteSource({ [STARGZ_REFERENCE_LABEL]: REF }), undefined);
  });

  for (const [what, labels, label] of HOSTILE) {
    it(`refuses ${what}`, () => {
      assert.throws(() => remoteSource(labels), (err: unknown) => {
        assert.ok(err instanceof InvalidLabelError, String(err));
        assert.ok(err.message.includes(label), err.message);
        return true;
      });
    });
  }
});
