import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { defaultConfig } from "../config/mod.ts";
import { Logger } from "../log/mod.ts";
import { BindLayerFs } from "../../test/snapshotter_bindfs.ts";
import { descriptorJson } from "../../scripts/gen-proto.ts";
import { SNAPSHOTS_PROTO_JSON } from "./_proto_gen.ts";
import {
  type Daemon,
  SNAPSHOTS_SERVICE_NAME,
  snapshotsPackageDefinition,
  snapshotsServiceDefinition,
  startDaemon,
} from "./mod.ts";

type Reply = Record<string, unknown>;

/** A client built from the bundled descriptor, with promise-returning unary calls. */
class Client {
  private readonly raw: grpc.Client & Record<string, grpc.MethodDefinition<unknown, unknown>>;
  constructor(socket: string) {
    const Ctor = grpc.makeGenericClientConstructor(snapshotsServiceDefinition(), "Snapshots");
    this.raw = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure()) as never;
  }
  call(method: string, req: object): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const fn = (this.raw as unknown as Record<string, (...a: unknown[]) => void>)[method]!;
      fn.call(this.raw, req, (err: grpc.ServiceError | null, res: Reply) => {
        if (err) reject(err);
        else resolve(res);
      });
    });
  }
  list(filters: string[]): Promise<Reply[]> {
    return new Promise((resolve, reject) => {
      const fn = (this.raw as unknown as Record<
        string,
        (...a: unknown[]) => grpc.ClientReadableStream<Reply>
      >)
        .List!;
      const stream = fn.call(this.raw, { filters });
      const out: Reply[] = [];
      stream.on("data", (d: Reply) => out.push(d));
      stream.on("error", reject);
      stream.on("end", () => resolve(out));
    });
  }
  close(): void {
    this.raw.close();
  }
}

function code(c: grpc.status) {
  return (err: unknown): boolean => {
    assert.equal((err as grpc.ServiceError).code, c, (err as Error).message);
    return true;
  };
}

describe("bundled snapshots.v1 descriptor", () => {
  it("matches proto/ (regenerate with scripts/gen-proto.ts)", () => {
    assert.deepEqual(SNAPSHOTS_PROTO_JSON, descriptorJson());
  });

  it("decodes Timestamp, FieldMask and Empty as containerd encodes them", () => {
    const def = snapshotsServiceDefinition();
    // UpdateSnapshotRequest{info{name:"a", created_at{seconds:1700000000, nanos:5}}, mask{paths:["labels.x"]}}
    const ts = Buffer.from([0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x05]);
    const info = Buffer.concat([Buffer.from([0x0a, 0x01, 0x61, 0x22, ts.length]), ts]);
    const mask = Buffer.from([0x0a, 0x08, ...Buffer.from("labels.x")]);
    const msg = Buffer.concat([
      Buffer.from([0x12, info.length]),
      info,
      Buffer.from([0x1a, mask.length]),
      mask,
    ]);
    const req = def.Update!.requestDeserialize(msg) as Reply;
    const decodedInfo = req.info as Reply;
    assert.equal(decodedInfo.name, "a");
    assert.deepEqual(decodedInfo.created_at, { seconds: 1700000000, nanos: 5 });
    assert.deepEqual(req.update_mask, { paths: ["labels.x"] });
    assert.equal(def.Commit!.responseSerialize({}).length, 0, "Empty is zero bytes");
    assert.deepEqual(def.Cleanup!.responseDeserialize(Buffer.alloc(0)), {});
    const usage = def.Usage!.responseSerialize({ size: 2 ** 40, inodes: 3 });
    assert.deepEqual(def.Usage!.responseDeserialize(usage), { size: 2 ** 40, inodes: 3 });
    assert.ok(snapshotsPackageDefinition()[SNAPSHOTS_SERVICE_NAME]);
  });
});

describe("Snapshots gRPC service", () => {
  let tmp: string;
  let daemon: Daemon;
  let client: Client;

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-svc-"));
    daemon = await startDaemon({
      address: path.join(tmp, "s.sock"),
      root: path.join(tmp, "root"),
      config: defaultConfig(),
      log: new Logger({ test: "service" }),
    });
    client = new Client(path.join(tmp, "s.sock"));
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it("serves every RPC with containerd's wire shapes", async () => {
    const p = await client.call("Prepare", { key: "a", parent: "", labels: { "l": "1" } });
    assert.deepEqual((p.mounts as Reply[]).map((m) => [m.type, m.options]), [["bind", [
      "rw",
      "rbind",
    ]]]);
    const source = (p.mounts as Reply[])[0]!.source as string;
    await fs.writeFile(path.join(source, "f"), "data");
    const u = await client.call("Usage", { key: "a" });
    assert.equal(u.inodes, 2);
    assert.ok((u.size as number) > 0);
    await client.call("Commit", { name: "A", key: "a", labels: { "c": "2" } });
    const st = await client.call("Stat", { key: "A" });
    const info = st.info as Reply;
    assert.equal(info.kind, "COMMITTED");
    assert.deepEqual(info.labels, { c: "2" });
    const created = info.created_at as { seconds: number; nanos: number };
    assert.ok(Math.abs(created.seconds - Date.now() / 1000) < 60);
    assert.ok(created.nanos >= 0 && created.nanos < 1e9);
    const up = await client.call("Update", {
      info: { name: "A", labels: { c: "", d: "4" } },
      update_mask: { paths: ["labels.c", "labels.d"] },
    });
    assert.deepEqual((up.info as Reply).labels, { d: "4" });
    const v = await client.call("View", { key: "v", parent: "A" });
    assert.deepEqual((v.mounts as Reply[])[0]!.options, ["ro", "rbind"]);
    const m = await client.call("Mounts", { key: "v" });
    assert.deepEqual(m.mounts, v.mounts);
    const listed = await client.list(["kind==view"]);
    assert.deepEqual(
      listed.flatMap((r) => (r.info as Reply[]).map((i) => [i.name, i.kind, i.parent])),
      [["v", "VIEW", "A"]],
    );
    await client.call("Remove", { key: "v" });
    await client.call("Cleanup", {});
    assert.deepEqual(
      (await daemon.snapshotter.list()).map((i) => i.name),
      ["A"],
    );
  });

  it("streams long listings in batches", async () => {
    for (let i = 0; i < 150; i++) await client.call("View", { key: `many-${i}`, parent: "A" });
    const batches = await client.list([`name~=^many-`]);
    assert.deepEqual(batches.map((b) => (b.info as Reply[]).length), [100, 50]);
  });

  it("answers with the status codes containerd maps back", async () => {
    await assert.rejects(client.call("Stat", { key: "nope" }), code(grpc.status.NOT_FOUND));
    await assert.rejects(
      client.call("Prepare", { key: "A", parent: "" }),
      code(grpc.status.ALREADY_EXISTS),
    );
    await assert.rejects(
      client.call("Remove", { key: "A" }),
      code(grpc.status.FAILED_PRECONDITION),
    );
    await assert.rejects(
      client.call("Update", { info: { name: "A" }, update_mask: { paths: ["kind"] } }),
      code(grpc.status.INVALID_ARGUMENT),
    );
    await assert.rejects(client.list(["name=="]), code(grpc.status.INVALID_ARGUMENT));
    await assert.rejects(
      client.call("Commit", { name: "B", key: "many-1" }),
      code(grpc.status.FAILED_PRECONDITION),
    );
  });
});

describe("Snapshots gRPC service with a remote filesystem", () => {
  it("answers AlreadyExists for remote layers and Unavailable for broken ones", async () => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-svcr-"));
    const layer = path.join(tmp, "layer");
    await fs.mkdir(layer);
    await fs.writeFile(path.join(layer, "f"), "remote");
    const rfs = new BindLayerFs();
    rfs.layers.set(`sha256:${"1".repeat(64)}`, layer);
    const daemon = await startDaemon({
      address: path.join(tmp, "s.sock"),
      root: path.join(tmp, "root"),
      config: defaultConfig(),
      log: new Logger({ test: "service-remote" }),
      fileSystem: rfs,
    });
    const client = new Client(path.join(tmp, "s.sock"));
    try {
      const labels = {
        "containerd.io/snapshot.ref": "chain-l1",
        "containerd.io/snapshot/cri.image-ref": "registry.test/app:1",
        "containerd.io/snapshot/cri.layer-digest": `sha256:${"1".repeat(64)}`,
        "containerd.io/snapshot/cri.image-layers": `sha256:${"1".repeat(64)}`,
      };
      await assert.rejects(
        client.call("Prepare", { key: "default/1/extract chain-l1", parent: "", labels }),
        code(grpc.status.ALREADY_EXISTS),
      );
      // What containerd's metadata layer asks next to find the committed target.
      const found = await client.list([
        `labels."containerd.io/snapshot.ref"==chain-l1,parent==""`,
      ]);
      const infos = found.flatMap((r) => r.info as Reply[]);
      assert.deepEqual(infos.map((i) => [i.name, i.kind]), [["chain-l1", "COMMITTED"]]);
      assert.equal(
        (infos[0]!.labels as Record<string, string>)["containerd.io/snapshot/remote"],
        "remote snapshot",
      );
      const v = await client.call("View", { key: "v", parent: "chain-l1" });
      const src = (v.mounts as Reply[])[0]!.source as string;
      assert.equal(await fs.readFile(path.join(src, "f"), "utf8"), "remote");
      rfs.broken.add(src);
      await assert.rejects(client.call("Mounts", { key: "v" }), code(grpc.status.UNAVAILABLE));
    } finally {
      client.close();
      await daemon.stop();
      assert.equal(rfs.mounted.size, 0, "stop unmounts remote layers");
      await fs.rm(tmp, { recursive: true, force: true });
    }
  });
});
