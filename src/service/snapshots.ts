/**
 * containerd's `containerd.services.snapshots.v1.Snapshots` gRPC service over a
 * {@link Snapshotter}: decodes and validates requests, encodes replies, and is the one place
 * where snapshotter errors become gRPC status codes.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as v from "valibot";
import type { Logger } from "../log/mod.ts";
import {
  type Mount,
  type SnapshotErrorCode,
  type SnapshotInfo,
  type SnapshotKind,
  Snapshotter,
  type Timestamp,
} from "../snapshot/mod.ts";
import { SnapshotError } from "../snapshot/mod.ts";
import { SNAPSHOTS_PROTO_JSON } from "./_proto_gen.ts";

/** Fully qualified name of the service. */
export const SNAPSHOTS_SERVICE_NAME = "containerd.services.snapshots.v1.Snapshots";

/** How decoded messages look: field names as in the .proto, int64 as numbers, enums as names. */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

/** The package definition built from the bundled descriptor (no .proto files read). */
export function snapshotsPackageDefinition(): protoLoader.PackageDefinition {
  // protobufjs' INamespace typing is stricter than the JSON its own toJSON emits.
  const json = SNAPSHOTS_PROTO_JSON as Parameters<typeof protoLoader.fromJSON>[0];
  return protoLoader.fromJSON(json, LOADER_OPTIONS);
}

/** The grpc-js service definition of the Snapshots service. */
export function snapshotsServiceDefinition(): grpc.ServiceDefinition {
  const def = snapshotsPackageDefinition()[SNAPSHOTS_SERVICE_NAME];
  if (!def || !("Prepare" in def)) {
    throw new Error(`${SNAPSHOTS_SERVICE_NAME} missing from descriptor`);
  }
  return def as grpc.ServiceDefinition;
}

const GRPC_CODES: Record<SnapshotErrorCode, grpc.status> = {
  "not-found": grpc.status.NOT_FOUND,
  "already-exists": grpc.status.ALREADY_EXISTS,
  "failed-precondition": grpc.status.FAILED_PRECONDITION,
  "invalid-argument": grpc.status.INVALID_ARGUMENT,
  "unavailable": grpc.status.UNAVAILABLE,
};

/** A decoded request that does not have the shape the .proto promises. */
class BadRequestError extends Error {
  override name = "BadRequestError";
}

/** Maps any error to the gRPC status containerd's errdefs.FromGRPC turns back into its type. */
export function toGrpcError(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof SnapshotError) return { code: GRPC_CODES[err.code], details: err.message };
  if (err instanceof BadRequestError) {
    return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  }
  return { code: grpc.status.UNKNOWN, details: err instanceof Error ? err.message : String(err) };
}

const Labels = v.record(v.string(), v.string());
const KeyRequest = v.object({ key: v.string() });
const CreateRequest = v.object({ key: v.string(), parent: v.string(), labels: Labels });
const CommitRequest = v.object({ name: v.string(), key: v.string(), labels: Labels });
const UpdateRequest = v.object({
  info: v.object({ name: v.string(), labels: Labels }),
  update_mask: v.nullable(v.object({ paths: v.array(v.string()) })),
});
const ListRequest = v.object({ filters: v.array(v.string()) });

function decode<S extends v.GenericSchema>(schema: S, value: unknown): v.InferOutput<S> {
  const r = v.safeParse(schema, value);
  if (!r.success) {
    throw new BadRequestError(`malformed request: ${r.issues.map((i) => i.message).join("; ")}`);
  }
  return r.output;
}

const KIND_NAMES: Record<SnapshotKind, string> = {
  view: "VIEW",
  active: "ACTIVE",
  committed: "COMMITTED",
};

interface WireInfo {
  name: string;
  parent: string;
  kind: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  labels: Record<string, string>;
}

function wireInfo(i: SnapshotInfo): WireInfo {
  return {
    name: i.name,
    parent: i.parent,
    kind: KIND_NAMES[i.kind],
    created_at: i.created,
    updated_at: i.updated,
    labels: i.labels,
  };
}

function wireMounts(ms: Mount[]): { mounts: object[] } {
  return {
    mounts: ms.map((m) => ({ type: m.type, source: m.source, target: "", options: m.options })),
  };
}

/** infos per ListSnapshotsResponse, as containerd's own service batches them. */
const LIST_BATCH = 100;

/**
 * The request handlers of the Snapshots service, backed by `sn`; `hooks.removed` runs after
 * each Remove (the CRI keychain drops credentials no snapshot needs any more).
 */
export function snapshotsService(
  sn: Snapshotter,
  log: Logger,
  hooks: { removed?: () => void } = {},
): grpc.UntypedServiceImplementation {
  const unary =
    <T>(method: string, fn: (req: unknown) => Promise<T>): grpc.handleUnaryCall<unknown, T> =>
    (call, callback) => {
      fn(call.request).then(
        (res) => callback(null, res),
        (err) => {
          const status = toGrpcError(err);
          const level = status.code === grpc.status.UNKNOWN ? "error" : "debug";
          log.log(level, "snapshots request answered with an error", { method, error: err });
          callback(status, null);
        },
      );
    };
  const empty = {};
  return {
    Prepare: unary("Prepare", async (req) => {
      const r = decode(CreateRequest, req);
      return wireMounts(await sn.prepare(r.key, r.parent, r.labels));
    }),
    View: unary("View", async (req) => {
      const r = decode(CreateRequest, req);
      return wireMounts(await sn.view(r.key, r.parent, r.labels));
    }),
    Mounts: unary(
      "Mounts",
      async (req) => wireMounts(await sn.mounts(decode(KeyRequest, req).key)),
    ),
    Commit: unary("Commit", async (req) => {
      const r = decode(CommitRequest, req);
      await sn.commit(r.name, r.key, r.labels);
      return empty;
    }),
    Remove: unary("Remove", async (req) => {
      await sn.remove(decode(KeyRequest, req).key);
      hooks.removed?.();
      return empty;
    }),
    Stat: unary(
      "Stat",
      async (req) => ({ info: wireInfo(await sn.stat(decode(KeyRequest, req).key)) }),
    ),
    Update: unary("Update", async (req) => {
      const r = decode(UpdateRequest, req);
      const info = await sn.update(r.info, r.update_mask?.paths ?? []);
      return { info: wireInfo(info) };
    }),
    Usage: unary("Usage", async (req) => await sn.usage(decode(KeyRequest, req).key)),
    Cleanup: unary("Cleanup", async () => {
      await sn.cleanup();
      return empty;
    }),
    List: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      (async () => {
        const infos = await sn.list(decode(ListRequest, call.request).filters);
        for (let i = 0; i < infos.length; i += LIST_BATCH) {
          call.write({ info: infos.slice(i, i + LIST_BATCH).map(wireInfo) });
        }
        call.end();
      })().catch((err) => {
        log.debug("snapshots request failed", { method: "List", error: err });
        call.emit("error", toGrpcError(err));
      });
    },
  };
}
