/**
 * A client of containerd's own gRPC API (content, images, leases, snapshots, diff) over its unix
 * socket, for the parts an image pull needs. Namespace and lease travel as gRPC metadata
 * (`containerd-namespace`, `containerd-lease`), as containerd's Go client sends them; gRPC
 * status codes become {@link ContainerdError} kinds here and nowhere else.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as v from "valibot";
import { CONTAINERD_PROTO_JSON } from "./_proto_gen.ts";

/** What went wrong in containerd, as its errdefs name it. */
export type ContainerdErrorKind =
  | "not-found"
  | "already-exists"
  | "failed-precondition"
  | "unavailable"
  | "invalid-argument"
  | "unknown";

/** A failed containerd call. */
export class ContainerdError extends Error {
  override name = "ContainerdError";
  constructor(message: string, readonly kind: ContainerdErrorKind) {
    super(message);
  }
}

const KINDS: Partial<Record<grpc.status, ContainerdErrorKind>> = {
  [grpc.status.NOT_FOUND]: "not-found",
  [grpc.status.ALREADY_EXISTS]: "already-exists",
  [grpc.status.FAILED_PRECONDITION]: "failed-precondition",
  [grpc.status.UNAVAILABLE]: "unavailable",
  [grpc.status.INVALID_ARGUMENT]: "invalid-argument",
};

function toContainerdError(call: string, err: unknown, address: string): ContainerdError {
  const e = err as Partial<grpc.ServiceError>;
  const kind = (e.code !== undefined ? KINDS[e.code] : undefined) ?? "unknown";
  // grpc-js reports a socket it cannot connect to as UNAVAILABLE, as containerd does a locked ref.
  if (
    kind === "unavailable" && /No connection established|ECONNREFUSED|ENOENT/.test(e.details ?? "")
  ) {
    return new ContainerdError(`containerd at ${address} is not reachable: ${e.details}`, kind);
  }
  return new ContainerdError(`containerd ${call}: ${e.details ?? String(err)}`, kind);
}

/** True when containerd refused a write because another writer holds the same ingest ref. */
export function isLockedError(err: unknown): boolean {
  return err instanceof ContainerdError && err.kind === "unavailable" && /locked/.test(err.message);
}

/** An OCI descriptor as containerd's API carries it. */
export interface ContainerdDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** One mount a snapshot needs (`containerd.types.Mount`). */
export interface ContainerdMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** A content store entry's metadata. */
export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

/** An image record. */
export interface ImageRecord {
  name: string;
  labels: Record<string, string>;
  target: ContainerdDescriptor;
}

/** A snapshot's metadata. */
export interface SnapshotStat {
  name: string;
  parent: string;
  kind: string;
  labels: Record<string, string>;
}

const Labels = v.record(v.string(), v.string());
const WireDescriptor = v.object({
  media_type: v.string(),
  digest: v.string(),
  size: v.number(),
  annotations: Labels,
});
const InfoResponse = v.object({
  info: v.object({ digest: v.string(), size: v.number(), labels: Labels }),
});
const ImageResponse = v.object({
  image: v.object({ name: v.string(), labels: Labels, target: WireDescriptor }),
});
const LeaseResponse = v.object({ lease: v.object({ id: v.string() }) });
const Mounts = v.object({
  mounts: v.array(v.object({
    type: v.string(),
    source: v.string(),
    target: v.string(),
    options: v.array(v.string()),
  })),
});
const StatResponse = v.object({
  info: v.object({ name: v.string(), parent: v.string(), kind: v.string(), labels: Labels }),
});
const ApplyResponse = v.object({ applied: WireDescriptor });
const WriteResponse = v.object({ action: v.string(), offset: v.number(), digest: v.string() });

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

type Service = "content" | "images" | "leases" | "snapshots" | "diff";
const SERVICE_NAMES: Record<Service, string> = {
  content: "containerd.services.content.v1.Content",
  images: "containerd.services.images.v1.Images",
  leases: "containerd.services.leases.v1.Leases",
  snapshots: "containerd.services.snapshots.v1.Snapshots",
  diff: "containerd.services.diff.v1.Diff",
};

/** Writes to the content store are gathered into pieces of this size (gRPC allows 4 MiB). */
const WRITE_CHUNK = 1 << 20;

function toWireDescriptor(d: ContainerdDescriptor): Record<string, unknown> {
  return {
    media_type: d.mediaType,
    digest: d.digest,
    size: d.size,
    annotations: d.annotations ?? {},
  };
}

function fromWireDescriptor(d: v.InferOutput<typeof WireDescriptor>): ContainerdDescriptor {
  return {
    mediaType: d.media_type,
    digest: d.digest,
    size: d.size,
    ...(Object.keys(d.annotations).length ? { annotations: d.annotations } : {}),
  };
}

/** An open content ingest (see {@link ContainerdClient.openContentWriter}). */
export interface ContentWriter {
  write(chunk: Uint8Array): Promise<void>;
  /** Commits the blob; resolves once containerd has verified and stored it. */
  commit(): Promise<void>;
  /** Gives up the write (the ingest stays until containerd collects it). */
  abort(): void;
}

/** Options of {@link ContainerdClient}. */
export interface ContainerdClientOptions {
  /** containerd's socket path. */
  address: string;
  /** containerd namespace (`default` unless told). */
  namespace: string;
}

/** containerd's API over its socket, in one namespace, optionally inside a lease. */
export class ContainerdClient {
  private readonly clients = new Map<Service, grpc.Client>();
  private readonly definitions: protoLoader.PackageDefinition;
  private lease: string | undefined;

  constructor(private readonly opts: ContainerdClientOptions) {
    // protobufjs' INamespace typing is stricter than the JSON its own toJSON emits.
    const json = CONTAINERD_PROTO_JSON as Parameters<typeof protoLoader.fromJSON>[0];
    this.definitions = protoLoader.fromJSON(json, LOADER_OPTIONS);
  }

  private client(service: Service): grpc.Client {
    let c = this.clients.get(service);
    if (!c) {
      const def = this.definitions[SERVICE_NAMES[service]] as grpc.ServiceDefinition;
      const Ctor = grpc.makeGenericClientConstructor(def, service);
      // Every service shares the first one's connection.
      const first = this.clients.values().next().value;
      c = new Ctor(
        `unix://${this.opts.address}`,
        grpc.credentials.createInsecure(),
        first ? { channelOverride: grpc.getClientChannel(first) } : {},
      );
      this.clients.set(service, c);
    }
    return c;
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set("containerd-namespace", this.opts.namespace);
    if (this.lease) md.set("containerd-lease", this.lease);
    return md;
  }

  private call(service: Service, method: string, req: unknown): Promise<unknown> {
    const c = this.client(service) as unknown as Record<
      string,
      (
        req: unknown,
        md: grpc.Metadata,
        opts: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res: unknown) => void,
      ) => void
    >;
    // No deadline: applying a large layer takes as long as it takes, and without waitForReady
    // a call to a containerd that is not there fails at once.
    return new Promise((resolve, reject) => {
      c[method]!.call(c, req, this.metadata(), {}, (err, res) => {
        if (err) reject(toContainerdError(`${service}.${method}`, err, this.opts.address));
        else resolve(res);
      });
    });
  }

  /** Creates a lease that expires after `expireSec` and attaches every later call to it. */
  async withLease(expireSec: number): Promise<string> {
    const expire = new Date(Date.now() + expireSec * 1000).toISOString().replace(/\.\d+Z$/, "Z");
    const res = v.parse(
      LeaseResponse,
      await this.call("leases", "Create", {
        id: `stargz-rpull-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
        labels: { "containerd.io/gc.expire": expire },
      }),
    );
    this.lease = res.lease.id;
    return res.lease.id;
  }

  /**
   * Deletes the lease (what it protected is then held by the image record alone); with
   * `collect`, waits for containerd's garbage collection to remove what nothing else holds.
   */
  async releaseLease(opts: { collect?: boolean } = {}): Promise<void> {
    const id = this.lease;
    if (!id) return;
    this.lease = undefined;
    await this.call("leases", "Delete", { id, sync: opts.collect === true });
  }

  /** The content store's metadata for `digest`, or undefined when it is not there. */
  async contentInfo(digest: string): Promise<ContentInfo | undefined> {
    try {
      return v.parse(InfoResponse, await this.call("content", "Info", { digest })).info;
    } catch (err) {
      if (err instanceof ContainerdError && err.kind === "not-found") return undefined;
      throw err;
    }
  }

  /** Sets `labels` on a content entry (other labels are kept). */
  async contentSetLabels(digest: string, labels: Record<string, string>): Promise<void> {
    await this.call("content", "Update", {
      info: { digest, labels },
      update_mask: { paths: Object.keys(labels).map((k) => `labels.${k}`) },
    });
  }

  /**
   * Opens an ingest `ref` for blob `desc` in the content store: write the bytes in order, then
   * commit (the store checks size and digest and sets `labels`). Resolves to undefined when the
   * blob is there already; rejects with kind `unavailable` while another writer holds `ref`
   * (see {@link isLockedError}). Interrupted ingests are kept by containerd under the lease;
   * writing from offset 0 truncates what one left.
   *
   * Like containerd's Go writer, every request waits for its reply before the next one goes out
   * (pieces are gathered up to 1 MiB): containerd answers each request, and letting requests
   * pile up behind HTTP/2 flow control stalled the stream under Bun.
   */
  async openContentWriter(
    ref: string,
    desc: { digest: string; size: number },
    labels: Record<string, string>,
  ): Promise<ContentWriter | undefined> {
    const c = this.client("content") as unknown as {
      Write(md: grpc.Metadata): grpc.ClientDuplexStream<unknown, unknown>;
    };
    const stream = c.Write(this.metadata());
    let failure: ContainerdError | undefined;
    /** The blob turned out to be there already (another pull stored it meanwhile). */
    let exists = false;
    let pending: { resolve(): void; reject(e: unknown): void } | undefined;
    const fail = (e: ContainerdError) => {
      failure ??= e;
      pending?.reject(failure);
      pending = undefined;
    };
    stream.on("data", (raw: unknown) => {
      if (!v.is(WriteResponse, raw)) {
        return fail(new ContainerdError("content.Write: malformed reply", "unknown"));
      }
      pending?.resolve();
      pending = undefined;
    });
    stream.on("error", (err) => {
      const e = toContainerdError("content.Write", err, this.opts.address);
      if (e.kind !== "already-exists") return fail(e);
      exists = true;
      pending?.resolve();
      pending = undefined;
    });
    const request = (msg: Record<string, unknown>) => {
      if (failure) return Promise.reject(failure);
      if (exists) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        pending = { resolve, reject };
        stream.write(msg);
      });
    };
    try {
      await request({ action: "STAT", ref, total: desc.size, expected: desc.digest });
    } catch (err) {
      stream.cancel();
      throw err;
    }
    if (exists) return undefined;
    let offset = 0;
    let buffered: Uint8Array[] = [];
    let bufferedBytes = 0;
    const flush = async () => {
      if (bufferedBytes === 0) return;
      const data = Buffer.concat(buffered, bufferedBytes);
      buffered = [];
      bufferedBytes = 0;
      await request({ action: "WRITE", ref, offset, data });
      offset += data.byteLength;
    };
    return {
      async write(chunk) {
        for (let i = 0; i < chunk.byteLength; i += WRITE_CHUNK) {
          const piece = chunk.subarray(i, Math.min(i + WRITE_CHUNK, chunk.byteLength));
          buffered.push(piece);
          bufferedBytes += piece.byteLength;
          if (bufferedBytes >= WRITE_CHUNK) await flush();
        }
      },
      async commit() {
        await flush();
        await request({
          action: "COMMIT",
          ref,
          offset,
          total: desc.size,
          expected: desc.digest,
          labels,
        });
        stream.end();
      },
      abort() {
        stream.cancel();
      },
    };
  }

  /** The image record `name`, or undefined. */
  async getImage(name: string): Promise<ImageRecord | undefined> {
    try {
      const res = v.parse(ImageResponse, await this.call("images", "Get", { name }));
      return { ...res.image, target: fromWireDescriptor(res.image.target) };
    } catch (err) {
      if (err instanceof ContainerdError && err.kind === "not-found") return undefined;
      throw err;
    }
  }

  /** Creates the image record, or updates its target and labels when it exists. */
  async putImage(image: ImageRecord): Promise<void> {
    const wire = { name: image.name, labels: image.labels, target: toWireDescriptor(image.target) };
    try {
      await this.call("images", "Create", { image: wire });
    } catch (err) {
      if (!(err instanceof ContainerdError && err.kind === "already-exists")) throw err;
      await this.call("images", "Update", {
        image: wire,
        update_mask: { paths: ["target", ...Object.keys(image.labels).map((k) => `labels.${k}`)] },
      });
    }
  }

  /** Stat of snapshot `key` in `snapshotter`, or undefined when it does not exist. */
  async statSnapshot(snapshotter: string, key: string): Promise<SnapshotStat | undefined> {
    try {
      return v.parse(StatResponse, await this.call("snapshots", "Stat", { snapshotter, key }))
        .info;
    } catch (err) {
      if (err instanceof ContainerdError && err.kind === "not-found") return undefined;
      throw err;
    }
  }

  /** Prepares an active snapshot; rejects with kind `already-exists` for a remote snapshot. */
  async prepareSnapshot(
    snapshotter: string,
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<ContainerdMount[]> {
    const res = await this.call("snapshots", "Prepare", { snapshotter, key, parent, labels });
    return v.parse(Mounts, res).mounts;
  }

  /** Commits active snapshot `key` as `name`. */
  async commitSnapshot(
    snapshotter: string,
    name: string,
    key: string,
    labels: Record<string, string>,
  ): Promise<void> {
    await this.call("snapshots", "Commit", { snapshotter, name, key, labels });
  }

  /** Removes snapshot `key`. */
  async removeSnapshot(snapshotter: string, key: string): Promise<void> {
    await this.call("snapshots", "Remove", { snapshotter, key });
  }

  /**
   * Applies the layer blob `desc` (already in the content store) onto `mounts` with
   * containerd's diff service; returns the digest of the uncompressed tar it applied.
   */
  async applyLayer(desc: ContainerdDescriptor, mounts: ContainerdMount[]): Promise<string> {
    const res = await this.call("diff", "Apply", {
      diff: toWireDescriptor(desc),
      mounts,
      payloads: {},
    });
    return v.parse(ApplyResponse, res).applied.digest;
  }

  /** Closes the connection. */
  close(): void {
    const first = this.clients.values().next().value;
    first?.close();
    this.clients.clear();
  }
}
