/**
 * The test plays kubelet: the part of the CRI v1 image service a pull needs, over containerd's
 * socket with grpc-js (field numbers as in k8s.io/cri-api).
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const CRI_JSON: Record<string, unknown> = {
  nested: {
    runtime: {
      nested: {
        v1: {
          nested: {
            ImageService: {
              methods: {
                PullImage: { requestType: "PullImageRequest", responseType: "PullImageResponse" },
                RemoveImage: {
                  requestType: "RemoveImageRequest",
                  responseType: "RemoveImageResponse",
                },
              },
            },
            ImageSpec: { fields: { image: { type: "string", id: 1 } } },
            AuthConfig: {
              fields: {
                username: { type: "string", id: 1 },
                password: { type: "string", id: 2 },
              },
            },
            PullImageRequest: {
              fields: { image: { type: "ImageSpec", id: 1 }, auth: { type: "AuthConfig", id: 2 } },
            },
            PullImageResponse: { fields: { image_ref: { type: "string", id: 1 } } },
            RemoveImageRequest: { fields: { image: { type: "ImageSpec", id: 1 } } },
            RemoveImageResponse: { fields: {} },
          },
        },
      },
    },
  },
};

function criCall<T>(socket: string, method: string, req: unknown): Promise<T> {
  // protobufjs' INamespace typing is stricter than the JSON descriptors it reads.
  const json = CRI_JSON as Parameters<typeof protoLoader.fromJSON>[0];
  const def = protoLoader.fromJSON(json, { keepCase: true, defaults: true });
  const service = def["runtime.v1.ImageService"] as grpc.ServiceDefinition;
  const Ctor = grpc.makeGenericClientConstructor(service, "ImageService");
  const client = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure());
  return new Promise<T>((resolve, reject) => {
    const fn = (client as unknown as Record<string, (...a: unknown[]) => void>)[method]!;
    fn.call(client, req, (err: Error | null, res: T) => {
      if (err) reject(err);
      else resolve(res);
    });
  }).finally(() => client.close());
}

/** CRI `ImageService.PullImage` of `image` (with registry credentials when given). */
export async function criPull(
  socket: string,
  image: string,
  auth?: { username: string; password: string },
): Promise<string> {
  const req = auth ? { image: { image }, auth } : { image: { image } };
  return (await criCall<{ image_ref: string }>(socket, "PullImage", req)).image_ref;
}

/** CRI `ImageService.RemoveImage` of `image` (all its references, as kubelet's image GC). */
export async function criRemove(socket: string, image: string): Promise<void> {
  await criCall(socket, "RemoveImage", { image: { image } });
}
