/**
 * Hostile Prepare labels against a real daemon and a real registry (behind a logging proxy):
 * every label the remote path would act on is parsed first, a refusal falls back to unpacking
 * with the reason logged, and no request ever leaves for anything but a blob or manifest of
 * the image's repository named by a parsed digest.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CRI_IMAGE_LAYERS_LABEL,
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  PREFETCH_SIZE_LABEL,
  REMOTE_URLS_LABEL,
  STARGZ_DIGEST_LABEL,
  STARGZ_LAYERS_LABEL,
  STARGZ_REFERENCE_LABEL,
  TARGET_SNAPSHOT_LABEL,
  TOC_DIGEST_LABEL,
} from "../src/labels/mod.ts";
import { snapshotsServiceDefinition } from "../src/service/mod.ts";
import { cleanupDir, type StargzProcess, startStargz, waitUntil } from "./_containerd.ts";
import { estargzLayer, pushLayers, tarDir } from "./_images.ts";
import type { BuiltLayer } from "./_images.ts";
import { type FaultProxy, type PushedImage, startFaultProxy, startRegistry } from "./_registry.ts";
import type { TestRegistry } from "./_registry.ts";

type Reply = Record<string, unknown>;

let dir: string;
let reg: TestRegistry;
let proxy: FaultProxy;
let daemon: StargzProcess;
let image: PushedImage;
let layer: BuiltLayer;
let client: grpc.Client;

function call(method: string, req: object): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, (...a: unknown[]) => void>)[method]!;
    fn.call(client, req, (err: grpc.ServiceError | null, res: Reply) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sgz-hostile-"));
  const src = path.join(dir, "src");
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, "hello"), "hello\n");
  tarDir(src, path.join(dir, "l.tar"));
  layer = await estargzLayer(path.join(dir, "l.tar"));
  reg = await startRegistry();
  image = await pushLayers(reg, "hostile/app", "v1", [layer]);
  proxy = await startFaultProxy(reg.url);
  daemon = await startStargz({ dir });
  const Ctor = grpc.makeGenericClientConstructor(snapshotsServiceDefinition(), "Snapshots");
  client = new Ctor(`unix://${daemon.address}`, grpc.credentials.createInsecure());
});

after(async () => {
  client?.close();
  await daemon?.stop();
  await proxy?.stop();
  await reg?.stop();
  await cleanupDir(dir);
});

/** The daemon's `remote-snapshot-prepared` log records for snapshot `key`. */
function decisions(key: string): { prepared: string; reason?: string }[] {
  return daemon.logs().split("\n").filter((l) => l.includes("remote-snapshot-prepared"))
    .map((l) => JSON.parse(l)).filter((r) => r.key === key)
    .map((r) => ({ prepared: r["remote-snapshot-prepared"], reason: r.reason }));
}

describe("Prepare with hostile labels", () => {
  it("refuses the remote path for each, and no request leaves for anything but the image", async () => {
    const ref = image.ref.replace(reg.host, proxy.host);
    const good = image.layers[0].digest;
    const valid = {
      [STARGZ_REFERENCE_LABEL]: ref,
      [STARGZ_DIGEST_LABEL]: good,
      [STARGZ_LAYERS_LABEL]: good,
      [TOC_DIGEST_LABEL]: layer.annotations!["containerd.io/snapshot/stargz/toc.digest"],
    };
    const hostile: [string, Record<string, string>, string][] = [
      ["path", { [STARGZ_DIGEST_LABEL]: "../../../../etc/passwd" }, STARGZ_DIGEST_LABEL],
      ["query", { [STARGZ_DIGEST_LABEL]: "sha256:abc?x=1#y" }, STARGZ_DIGEST_LABEL],
      ["newline", { [STARGZ_DIGEST_LABEL]: `${good}\n/../../x` }, STARGZ_DIGEST_LABEL],
      ["neighbour", { [STARGZ_LAYERS_LABEL]: `${good},../../etc/shadow` }, STARGZ_LAYERS_LABEL],
      ["ref", { [STARGZ_REFERENCE_LABEL]: `${proxy.host}/../../x:v1` }, STARGZ_REFERENCE_LABEL],
      ["url", { [REMOTE_URLS_LABEL]: "file:///etc/passwd" }, REMOTE_URLS_LABEL],
      ["toc", { [TOC_DIGEST_LABEL]: "sha256:../../x" }, TOC_DIGEST_LABEL],
      ["prefetch", { [PREFETCH_SIZE_LABEL]: "-1" }, PREFETCH_SIZE_LABEL],
      [
        "cri",
        {
          [CRI_IMAGE_REF_LABEL]: ref,
          [CRI_LAYER_DIGEST_LABEL]: "/v2/other/blobs/x",
          [CRI_IMAGE_LAYERS_LABEL]: good,
        },
        CRI_LAYER_DIGEST_LABEL,
      ],
    ];
    for (const [name, over, label] of hostile) {
      const key = `hostile-${name}`;
      const mounts = await call("Prepare", {
        key,
        parent: "",
        labels: { ...valid, ...over, [TARGET_SNAPSHOT_LABEL]: `target-${name}` },
      });
      // The fallback: an ordinary active snapshot that containerd unpacks into.
      assert.equal((mounts.mounts as unknown[]).length, 1, name);
      await waitUntil(() => Promise.resolve(decisions(key).length > 0), 10_000, `${key} log`);
      const [d] = decisions(key);
      assert.equal(d!.prepared, "false", name);
      assert.ok(d!.reason?.includes(label), `${name}: ${d!.reason}`);
    }
    assert.deepEqual(proxy.requests.map((r) => r.url), [], "no request for a refused Prepare");

    // The same labels without the hostile one do make a remote snapshot, through the proxy.
    await assert.rejects(
      call("Prepare", {
        key: "valid",
        parent: "",
        labels: { ...valid, [TARGET_SNAPSHOT_LABEL]: "target-valid" },
      }),
      (err: grpc.ServiceError) => err.code === grpc.status.ALREADY_EXISTS,
    );
    assert.equal(decisions("valid")[0]?.prepared, "true");
    assert.ok(proxy.requests.length > 0);
    const allowed = new RegExp(`^/v2/hostile/app/(blobs|manifests)/sha256:[0-9a-f]{64}$`);
    for (const r of proxy.requests) assert.match(r.url, allowed);
  });

  it("keeps snapshot keys and parents out of paths", async () => {
    const key = "../../../../../../tmp/sgz-hostile-key";
    const mounts = await call("Prepare", { key, parent: "", labels: {} });
    const source = (mounts.mounts as { source: string }[])[0]!.source;
    assert.ok(source.startsWith(path.join(daemon.root, "snapshots") + "/"), source);
    assert.equal(fs.existsSync("/tmp/sgz-hostile-key"), false);
    await assert.rejects(
      call("Prepare", { key: "child", parent: "../../../etc", labels: {} }),
      (err: grpc.ServiceError) => err.code === grpc.status.NOT_FOUND,
    );
  });
});
