import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { CONTAINERD_CLIENT_BUNDLE, descriptorJson } from "../../scripts/gen-proto.ts";
import { CONTAINERD_PROTO_JSON } from "./_proto_gen.ts";
import { parseDigest } from "../registry/mod.ts";
import { chainIds, layerLabels } from "./pull.ts";

const d = (n: number) => parseDigest(`sha256:${String(n).repeat(64).slice(0, 64)}`);
const layers = [1, 2, 3].map((n) => ({
  mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
  digest: d(n),
  size: 10,
  annotations: {
    "containerd.io/snapshot/stargz/toc.digest": d(9),
    "org.opencontainers.image.title": "not inherited",
  },
}));

describe("bundled containerd client descriptor", () => {
  it("matches proto/ (regenerate with scripts/gen-proto.ts)", () => {
    assert.deepEqual(CONTAINERD_PROTO_JSON, descriptorJson(CONTAINERD_CLIENT_BUNDLE));
  });
});

describe("pull labels", () => {
  it("computes containerd's chain IDs", () => {
    // identity.ChainID of [a, b] is sha256("a b").
    assert.deepEqual(chainIds(["sha256:a", "sha256:b"]), [
      "sha256:a",
      "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8",
    ]);
  });

  it("sets upstream rpull's stargz labels, the TOC digest and the target ref", () => {
    const labels = layerLabels("127.0.0.1:5000/app:v1", d(8), layers, 1, d(7), {});
    assert.deepEqual(labels, {
      "containerd.io/snapshot/stargz/toc.digest": d(9),
      "containerd.io/snapshot/remote/stargz.reference": "127.0.0.1:5000/app:v1",
      "containerd.io/snapshot/remote/stargz.digest": d(2),
      "containerd.io/snapshot/remote/stargz.layers": `${d(2)},${d(3)}`,
      "containerd.io/snapshot/remote/stargz.prefetch": String(10 * 1024 * 1024),
      "containerd.io/snapshot.ref": d(7),
    });
  });

  it("sets the CRI plugin's labels with --use-containerd-labels, and skipverify", () => {
    const labels = layerLabels("r/app:v1", d(8), layers, 0, d(7), {
      containerdLabels: true,
      skipContentVerify: true,
    });
    assert.equal(labels["containerd.io/snapshot/cri.image-ref"], "r/app:v1");
    assert.equal(labels["containerd.io/snapshot/cri.manifest-digest"], d(8));
    assert.equal(labels["containerd.io/snapshot/cri.layer-digest"], d(1));
    assert.equal(
      labels["containerd.io/snapshot/cri.image-layers"],
      layers.map((l) => l.digest).join(","),
    );
    assert.equal(labels["containerd.io/snapshot/remote/stargz.skipverify"], "true");
    assert.equal(labels["containerd.io/snapshot/remote/stargz.reference"], undefined);
  });

  it("keeps the layers label within containerd's 4096-byte label limit", () => {
    const many = Array.from({ length: 100 }, (_, i) => ({ ...layers[0], digest: d(i % 10) }));
    const labels = layerLabels("r/app:v1", d(8), many, 0, d(7), {});
    const key = "containerd.io/snapshot/remote/stargz.layers";
    assert.ok(key.length + labels[key].length <= 4096);
    assert.equal(labels[key].split(",").length, Math.floor((4096 - key.length + 1) / 72));
  });
});
