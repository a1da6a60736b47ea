import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { existsSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { criImageDescriptorJson } from "../../scripts/gen-proto.ts";
import { waitUntil } from "../../test/_containerd.ts";
import { defaultConfig } from "../config/mod.ts";
import { Logger } from "../log/mod.ts";
import { CriKeychain } from "../registry/mod.ts";
import { CRI_IMAGE_PROTO_JSON } from "./_proto_gen.ts";
import { CRI_IMAGE_SERVICE_NAME, criImageProxy } from "./cri.ts";
import { startDaemon } from "./mod.ts";

const json = CRI_IMAGE_PROTO_JSON as Parameters<typeof protoLoader.fromJSON>[0];
const decoded = protoLoader.fromJSON(json, { keepCase: true, defaults: true })[
  CRI_IMAGE_SERVICE_NAME
] as grpc.ServiceDefinition;

function bind(server: grpc.Server, socket: string): Promise<void> {
  return new Promise((resolve, reject) =>
    server.bindAsync(
      `unix://${socket}`,
      grpc.ServerCredentials.createInsecure(),
      (e) => (e ? reject(e) : resolve()),
    )
  );
}

function call<T>(client: grpc.Client, method: string, req: unknown, md = new grpc.Metadata()) {
  return new Promise<T>((resolve, reject) => {
    const fn = (client as unknown as Record<string, (...a: unknown[]) => void>)[method]!;
    fn.call(client, req, md, (err: Error | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

describe("bundled CRI ImageService descriptor", () => {
  it("matches proto/ (regenerate with scripts/gen-proto.ts)", () => {
    assert.deepEqual(CRI_IMAGE_PROTO_JSON, criImageDescriptorJson());
  });

  it("holds every ImageService method and no other service", () => {
    assert.deepEqual(Object.keys(decoded).sort(), [
      "ImageFsInfo",
      "ImageStatus",
      "ListImages",
      "PullImage",
      "RemoveImage",
      "StreamImages",
    ]);
  });
});

describe("CRI image service proxy", () => {
  it("passes calls on unchanged, also to a backend that starts later, and keeps pull auth", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cri-proxy-"));
    dirs.push(dir);
    const keychain = await CriKeychain.open(path.join(dir, "creds.json"));
    const proxy = criImageProxy({
      backend: path.join(dir, "backend.sock"),
      keychain,
      log: new Logger({ test: "cri" }),
    });
    const front = new grpc.Server();
    front.addService(proxy.definition, proxy.implementation);
    await bind(front, path.join(dir, "front.sock"));
    const Ctor = grpc.makeGenericClientConstructor(decoded, "ImageService");
    const client = new Ctor(
      `unix://${path.join(dir, "front.sock")}`,
      grpc.credentials.createInsecure(),
    );

    const seen: { method: string; req: unknown; md: string | undefined }[] = [];
    let credsDuringPull: unknown;
    const backend = new grpc.Server();
    backend.addService(decoded, {
      PullImage: (
        c: grpc.ServerUnaryCall<{ image: { image: string } }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) => {
        seen.push({ method: "PullImage", req: c.request, md: c.metadata.get("x-k")[0] as string });
        keychain.get("reg.io", "app").then((creds) => {
          credsDuringPull = creds;
          if (c.request.image.image.endsWith(":bad")) {
            cb({ code: grpc.status.UNKNOWN, details: "failed to pull: 401 Unauthorized" });
          } else cb(null, { image_ref: "sha256:abc" });
        });
      },
      ImageStatus: (c: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        seen.push({ method: "ImageStatus", req: c.request, md: undefined });
        cb(null, { image: null, info: { k: "v" } });
      },
      StreamImages: (c: grpc.ServerWritableStream<unknown, unknown>) => {
        c.write({ images: [{ id: "a" }] });
        c.write({ images: [{ id: "b" }] });
        c.end();
      },
    });
    // The first call is made before the backend listens: it must wait, not fail.
    const md = new grpc.Metadata();
    md.set("x-k", "v1");
    const pulled = call<{ image_ref: string }>(client, "PullImage", {
      image: { image: "reg.io/app:v1" },
      auth: { username: "u", password: "pw" },
    }, md);
    // The proxy stores the pull's auth before passing the call on: once it holds it, the call is
    // in the proxy, waiting for a backend that does not listen yet.
    await waitUntil(
      async () => (await keychain.get("reg.io", "app")) !== undefined,
      30_000,
      "the pull to reach the proxy",
    );
    assert.equal(existsSync(path.join(dir, "backend.sock")), false, "no backend yet");
    await bind(backend, path.join(dir, "backend.sock"));
    assert.deepEqual(await pulled, { image_ref: "sha256:abc" });
    assert.deepEqual(credsDuringPull, { username: "u", password: "pw" });
    assert.equal(seen[0]!.md, "v1", "metadata passed on");
    assert.deepEqual(
      (seen[0]!.req as { auth: { password: string } }).auth.password,
      "pw",
      "the request reaches the backend with its auth",
    );

    const status = await call<{ info: Record<string, string> }>(client, "ImageStatus", {
      image: { image: "reg.io/app:v1" },
      verbose: true,
    });
    assert.deepEqual(status.info, { k: "v" });

    await assert.rejects(
      call(client, "PullImage", {
        image: { image: "reg.io/app:bad" },
        auth: { username: "u", password: "wrong" },
      }),
      (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNKNOWN);
        assert.equal(err.details, "failed to pull: 401 Unauthorized");
        return true;
      },
    );
    assert.deepEqual(await keychain.get("reg.io", "app"), { username: "u", password: "pw" });

    const ids: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const s =
        (client as unknown as Record<string, (r: unknown) => grpc.ClientReadableStream<unknown>>)
          .StreamImages!({});
      s.on("data", (d: { images: { id: string }[] }) => ids.push(...d.images.map((i) => i.id)));
      s.on("end", resolve);
      s.on("error", reject);
    });
    assert.deepEqual(ids, ["a", "b"]);

    client.close();
    proxy.close();
    front.forceShutdown();
    backend.forceShutdown();
  });
});

describe("daemon with the CRI keychain", () => {
  it("starts without its backend, serves ImageService on listen_path, and cleans up", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cri-daemon-"));
    dirs.push(dir);
    const config = defaultConfig();
    config.cri_keychain = {
      enable_keychain: true,
      image_service_path: path.join(dir, "nobody-listens.sock"),
      listen_path: path.join(dir, "cri", "cri.sock"),
    };
    const daemon = await startDaemon({
      address: path.join(dir, "s.sock"),
      root: path.join(dir, "root"),
      config,
      log: new Logger({ test: "cri" }),
    });
    const Ctor = grpc.makeGenericClientConstructor(decoded, "ImageService");
    const client = new Ctor(
      `unix://${config.cri_keychain.listen_path}`,
      grpc.credentials.createInsecure(),
    );
    try {
      // Reaches our proxy, which waits for the missing backend until the caller's deadline.
      await assert.rejects(
        new Promise((resolve, reject) =>
          (client as unknown as Record<string, (...a: unknown[]) => void>).ImageFsInfo!.call(
            client,
            {},
            new grpc.Metadata(),
            { deadline: Date.now() + 500 },
            (err: Error | null, res: unknown) => (err ? reject(err) : resolve(res)),
          )
        ),
        (err: grpc.ServiceError) => err.code === grpc.status.DEADLINE_EXCEEDED,
      );
    } finally {
      client.close();
      await daemon.stop();
    }
    await assert.rejects(fs.stat(config.cri_keychain.listen_path), /ENOENT/);
  });
});
