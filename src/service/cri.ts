/**
 * CRI `runtime.v1.ImageService` as a proxy (the CRI keychain): kubelet talks to our socket as
 * its image service (`--image-service-endpoint`), every call is passed on byte for byte to the
 * real image service (containerd's socket), and the `auth` of each `PullImage` is remembered
 * for that image's layers before the pull goes on.
 *
 * The backend may start after us: the client connects on the first call and waits for the
 * backend to become ready within the caller's deadline (grpc-js `waitForReady`), so neither our
 * start-up nor a backend restart needs anything from us.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as v from "valibot";
import type { Logger } from "../log/mod.ts";
import { CriAuthConfig, type CriKeychain } from "../registry/mod.ts";
import { CRI_IMAGE_PROTO_JSON } from "./_proto_gen.ts";

/** Fully qualified name of the proxied service. */
export const CRI_IMAGE_SERVICE_NAME = "runtime.v1.ImageService";

/** A call without a deadline waits this long for the backend (kubelet always sets one). */
const DEFAULT_DEADLINE_MS = 120_000;

/** The decoded service from the bundled descriptor (no .proto files read). */
function decodedService(): grpc.ServiceDefinition {
  // protobufjs' INamespace typing is stricter than the JSON its own toJSON emits.
  const json = CRI_IMAGE_PROTO_JSON as Parameters<typeof protoLoader.fromJSON>[0];
  const def = protoLoader.fromJSON(json, { keepCase: true, defaults: false, longs: Number })[
    CRI_IMAGE_SERVICE_NAME
  ];
  if (!def || !("PullImage" in def)) {
    throw new Error(`${CRI_IMAGE_SERVICE_NAME} missing from descriptor`);
  }
  return def as grpc.ServiceDefinition;
}

const PullImageRequest = v.object({
  image: v.optional(v.object({ image: v.optional(v.string(), "") })),
  auth: v.optional(CriAuthConfig),
});

const raw = (b: Buffer): Buffer => b;

/** The service definition: every ImageService method, messages left as bytes. */
export function criImageServiceDefinition(): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  for (const [name, m] of Object.entries(decodedService())) {
    def[name] = {
      path: m.path,
      requestStream: m.requestStream,
      responseStream: m.responseStream,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    };
  }
  return def;
}

/** Headers grpc-js sets on every call itself; the rest of the caller's metadata is passed on. */
const OWN_HEADERS = new Set(["user-agent", "content-type", "te", "host", "grpc-accept-encoding"]);

/** The caller's metadata, and the option that makes the call wait for the backend to be up. */
function forwardMetadata(md: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata({ waitForReady: true });
  for (const [k, value] of Object.entries(md.getMap())) {
    if (OWN_HEADERS.has(k) || k.startsWith("grpc-") || k.startsWith(":")) continue;
    out.set(k, value);
  }
  return out;
}

function callOptions(call: { getDeadline(): grpc.Deadline }): grpc.CallOptions {
  const d = call.getDeadline();
  const deadline = d instanceof Date
    ? d
    : Number.isFinite(d)
    ? d
    : Date.now() + DEFAULT_DEADLINE_MS;
  return { deadline };
}

/** A running proxy; `close()` drops the backend connection. */
export interface CriImageProxy {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  close(): void;
}

/**
 * The proxy to the image service at `backend` (a unix socket path), remembering credentials in
 * `keychain`; `pulled` runs after every PullImage (the daemon sweeps credentials there).
 */
export function criImageProxy(
  opts: { backend: string; keychain: CriKeychain; log: Logger; pulled?: () => void },
): CriImageProxy {
  const decodePull = decodedService().PullImage!.requestDeserialize;
  let client: grpc.Client | undefined;
  const backend = (): grpc.Client =>
    client ??= new grpc.Client(`unix://${opts.backend}`, grpc.credentials.createInsecure());
  const definition = criImageServiceDefinition();

  const unary = (path: string, req: Buffer, call: grpc.ServerUnaryCall<Buffer, Buffer>) =>
    new Promise<Buffer>((resolve, reject) => {
      backend().makeUnaryRequest(
        path,
        raw,
        raw,
        req,
        forwardMetadata(call.metadata),
        callOptions(call),
        (err, res) => (err ? reject(err) : resolve(res!)),
      );
    });

  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [name, m] of Object.entries(definition)) {
    if (m.responseStream) {
      implementation[name] = (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const up = backend().makeServerStreamRequest(
          m.path,
          raw,
          raw,
          call.request,
          forwardMetadata(call.metadata),
          callOptions(call),
        );
        up.on("data", (b: Buffer) => call.write(b));
        up.on("error", (err: grpc.ServiceError) => call.emit("error", err));
        up.on("end", () => call.end());
        call.on("cancelled", () => up.cancel());
      };
      continue;
    }
    implementation[name] = (
      call: grpc.ServerUnaryCall<Buffer, Buffer>,
      callback: grpc.sendUnaryData<Buffer>,
    ) => {
      const answer = name === "PullImage"
        ? pullImage(m.path, call)
        : unary(m.path, call.request, call);
      answer.then(
        (res) => callback(null, res),
        (err: grpc.ServiceError) => {
          // Passed on as the backend said it (kubelet reads containerd's own error); the
          // message never holds the credentials, which only travel in the request body.
          opts.log.debug("cri: image service call failed", {
            method: name,
            code: err.code,
            error: err.details,
          });
          callback(err, null);
        },
      );
    };
  }

  async function pullImage(path: string, call: grpc.ServerUnaryCall<Buffer, Buffer>) {
    let parsed;
    try {
      parsed = v.safeParse(PullImageRequest, decodePull(call.request));
    } catch {
      parsed = undefined;
    }
    // A request we cannot read is still the backend's to answer (and to refuse).
    const image = parsed?.success ? parsed.output.image?.image ?? "" : "";
    const auth = parsed?.success ? parsed.output.auth : undefined;
    if (!image) return await unary(path, call.request, call);
    try {
      return await opts.keychain.duringPull(image, auth, () => unary(path, call.request, call));
    } finally {
      opts.pulled?.();
    }
  }

  return {
    definition,
    implementation,
    close: () => client?.close(),
  };
}
