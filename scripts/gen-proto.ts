/**
 * Regenerates the bundled protobufjs JSON descriptors from proto/**, so the compiled binary never
 * reads .proto files at run time: the daemon's (src/service/_proto_gen.ts: the snapshots.v1
 * service it serves, and CRI's `runtime.v1.ImageService` it proxies for the CRI keychain) and the
 * containerd client's (src/containerd/_proto_gen.ts, the services `stargz rpull` calls). The CRI
 * API file is upstream's whole `api.proto` (k8s.io/cri-api, kept verbatim so it can be refreshed
 * by copying); only `runtime.v1.ImageService` and the messages it reaches are bundled.
 *
 * Usage: bun scripts/gen-proto.ts [--check]
 * With --check it exits 1 when a committed file differs from what the protos produce.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const protoDir = path.join(repo, "proto");

/** One exported constant of a generated module. */
interface Descriptor {
  constant: string;
  doc: string;
  json(): unknown;
}

/** One generated module and the descriptors it exports. */
interface Bundle {
  out: string;
  /** Entry points, relative to proto/ (for the full-file descriptors). */
  protos: readonly string[];
  extra?: readonly Descriptor[];
  constant: string;
  doc: string;
}

/** The CRI API, upstream's file as is. */
export const CRI_PROTO_FILE = "k8s.io/cri-api/pkg/apis/runtime/v1/api.proto";
/** The one CRI service the daemon serves (as a proxy). */
export const CRI_IMAGE_SERVICE = "runtime.v1.ImageService";

function load(files: readonly string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string): string => path.join(protoDir, target);
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();
  return root;
}

/**
 * The descriptor of `service` and every type it reaches (requests, responses, their fields'
 * types, transitively), each at its place in the package tree; the rest of the file is left out.
 */
function serviceClosureJson(root: protobuf.Root, service: string): unknown {
  const keep = new Set<protobuf.ReflectionObject>();
  const visit = (t: protobuf.Type | protobuf.Enum): void => {
    if (keep.has(t)) return;
    keep.add(t);
    if (t instanceof protobuf.Enum) return;
    for (const f of t.fieldsArray) {
      const rt = f.resolve().resolvedType;
      if (rt) visit(rt);
    }
    for (const nested of t.nestedArray) {
      if (nested instanceof protobuf.Type || nested instanceof protobuf.Enum) visit(nested);
    }
  };
  const svc = root.lookupService(service);
  keep.add(svc);
  for (const m of svc.methodsArray) {
    m.resolve();
    visit(m.resolvedRequestType!);
    visit(m.resolvedResponseType!);
  }
  const out = new protobuf.Root();
  for (const obj of keep) {
    // Types nested in a kept type come along with it.
    if (obj.parent && keep.has(obj.parent)) continue;
    const ns = out.define(obj.parent!.fullName.replace(/^\./, ""));
    ns.add(
      obj instanceof protobuf.Service
        ? protobuf.Service.fromJSON(obj.name, obj.toJSON())
        : obj instanceof protobuf.Enum
        ? protobuf.Enum.fromJSON(obj.name, obj.toJSON())
        : protobuf.Type.fromJSON(obj.name, (obj as protobuf.Type).toJSON()),
    );
  }
  return out.toJSON({ keepComments: false });
}

/** The bundled descriptor of CRI's `runtime.v1.ImageService`. */
export function criImageDescriptorJson(): unknown {
  return serviceClosureJson(load([CRI_PROTO_FILE]), CRI_IMAGE_SERVICE);
}

/** The daemon's bundle: the snapshots.v1 service containerd's proxy client calls, and CRI's. */
export const SNAPSHOTS_BUNDLE: Bundle = {
  out: "src/service/_proto_gen.ts",
  constant: "SNAPSHOTS_PROTO_JSON",
  doc: "containerd's snapshots.v1 API and the types it uses",
  protos: ["containerd/services/snapshots/v1/snapshots.proto"],
  extra: [{
    constant: "CRI_IMAGE_PROTO_JSON",
    doc: "CRI's runtime.v1.ImageService and the messages it uses",
    json: criImageDescriptorJson,
  }],
};

/** The containerd client's bundle: what an image pull into containerd needs. */
export const CONTAINERD_CLIENT_BUNDLE: Bundle = {
  out: "src/containerd/_proto_gen.ts",
  constant: "CONTAINERD_PROTO_JSON",
  doc: "containerd 1.6's content, images, leases, diff and snapshots APIs",
  protos: [
    "containerd/services/content/v1/content.proto",
    "containerd/services/images/v1/images.proto",
    "containerd/services/leases/v1/leases.proto",
    "containerd/services/diff/v1/diff.proto",
    "containerd/services/snapshots/v1/snapshots.proto",
  ],
};

const BUNDLES = [SNAPSHOTS_BUNDLE, CONTAINERD_CLIENT_BUNDLE];

/** Loads a bundle's protos and returns the JSON descriptor protobufjs would rebuild them from. */
export function descriptorJson(bundle: Bundle = SNAPSHOTS_BUNDLE): unknown {
  return load(bundle.protos).toJSON({ keepComments: false });
}

/** The generated module's source text (before formatting). */
export function generatedSource(bundle: Bundle = SNAPSHOTS_BUNDLE): string {
  const all: Descriptor[] = [
    { constant: bundle.constant, doc: bundle.doc, json: () => descriptorJson(bundle) },
    ...(bundle.extra ?? []),
  ];
  return [
    "// Generated by scripts/gen-proto.ts from proto/**/*.proto; do not edit by hand.",
    "",
    ...all.flatMap((d) => [
      `/** protobufjs JSON descriptor of ${d.doc}. */`,
      `export const ${d.constant}: Record<string, unknown> = ${
        JSON.stringify(d.json(), null, 2)
      };`,
      "",
    ]),
  ].join("\n");
}

function format(file: string): void {
  const deno = path.join(repo, "node_modules/.bin/deno");
  execFileSync(deno, ["fmt", "--quiet", file], { cwd: repo, stdio: "inherit" });
}

if (import.meta.main) {
  let stale = false;
  for (const bundle of BUNDLES) {
    const outFile = path.join(repo, bundle.out);
    const tmp = `${outFile}.tmp.ts`;
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    fs.writeFileSync(tmp, generatedSource(bundle));
    format(tmp);
    const fresh = fs.readFileSync(tmp, "utf8");
    if (process.argv.includes("--check")) {
      fs.rmSync(tmp);
      const current = fs.existsSync(outFile) ? fs.readFileSync(outFile, "utf8") : "";
      if (current !== fresh) {
        console.error(`${bundle.out} is stale: run bun scripts/gen-proto.ts`);
        stale = true;
      }
    } else {
      fs.renameSync(tmp, outFile);
    }
  }
  if (stale) process.exit(1);
}
