/**
 * The layer tree, built from the blob's compact index, against a straightforward walk of the TOC
 * written here (objects and Maps, no index): the same nodes, numbered alike, with the same
 * attributes and listings, for Go-built blobs and ours (gzip, zstd, packed small files,
 * prioritized files). Also that a second process opening the same layer numbers it alike, which
 * a daemon taking over mounts from its predecessor relies on.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  cleanEntryName,
  convertLayer,
  decodeXattrs,
  openBlob,
  type TocEntry,
} from "../estargz/mod.ts";
import { parseModtime } from "../estargz/toc.ts";
import { scriptCommand } from "../runtime/mod.ts";
import { LayerTree, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG } from "./_tree.ts";
import { buildTar, sampleLayer, TEST_CHUNK } from "../../test/estargz_fixtures.ts";

const FIXTURES = path.join(
  path.dirname(new URL(import.meta.url).pathname),
  "..",
  "..",
  "test",
  "fixtures",
  "estargz",
);
const TYPE_BITS: Record<string, number> = {
  dir: S_IFDIR,
  reg: S_IFREG,
  symlink: S_IFLNK,
  char: S_IFCHR,
  block: S_IFBLK,
  fifo: S_IFIFO,
};
/** Prints a blob's tree ids from a fresh process. */
const CHILD = path.join(FIXTURES, "..", "..", "_tree_ids.ts");
const HIDDEN = new Set(["stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"]);

interface RefNode {
  entry: TocEntry | undefined;
  path: string;
  children: Map<string, RefNode> | undefined;
  names: number;
}

/** What a served node looks like, as compared. */
interface Served {
  id: number;
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  nlink: number;
  rdev: [number, number];
  linkName: string;
  xattrs: [string, number[]][];
  parentId: number;
  entries: [string, number][];
}

/**
 * The served tree straight from the TOC: the last entry of a name wins and takes its place in
 * the listing where it comes; parents not in the TOC are implied (0755, root) where first needed;
 * hardlinks share their target's node; then a depth-first walk numbers the nodes from 1, leaving
 * out the format's own root entries, turning `.wh.` entries into 0:0 devices (after the
 * directory's other entries, and only for names it lacks) and `.wh..wh..opq` into an xattr.
 */
function referenceTree(entries: readonly TocEntry[]): Served[] {
  const winner = new Map<string, number>();
  entries.forEach((e, i) => {
    if (e.type !== "chunk") winner.set(cleanEntryName(e.name), i);
  });
  const nodes = new Map<string, RefNode>();
  const nodeOf = (p: string): RefNode => {
    let n = nodes.get(p);
    if (!n) {
      const i = winner.get(p);
      const e = i === undefined ? undefined : entries[i];
      n = { entry: e, path: p, children: undefined, names: 0 };
      if (!e || e.type === "dir") n.children = new Map();
      nodes.set(p, n);
    }
    return n;
  };
  const attached = new Set<string>();
  const attach = (p: string, n: RefNode): void => {
    if (p === "" || attached.has(p)) return;
    attached.add(p);
    const parentPath = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
    const parent = nodeOf(parentPath);
    if (!winner.has(parentPath)) attach(parentPath, parent);
    parent.children!.set(p.slice(p.lastIndexOf("/") + 1), n);
    n.names++;
  };
  const resolve = (p: string): RefNode => {
    let e = entries[winner.get(p)!];
    while (e.type === "hardlink") {
      p = cleanEntryName(e.linkName!);
      e = entries[winner.get(p)!];
    }
    return nodeOf(p);
  };
  entries.forEach((e, i) => {
    if (e.type === "chunk") return;
    const p = cleanEntryName(e.name);
    if (winner.get(p) === i) attach(p, resolve(p));
  });

  const out: Served[] = [];
  const served = new Map<RefNode, Served>();
  const serve = (n: RefNode, whiteout: boolean): Served => {
    const e = n.entry;
    const s: Served = {
      id: out.length + 1,
      path: n.path,
      mode: whiteout ? S_IFCHR : TYPE_BITS[e?.type ?? "dir"] | ((e ? e.mode ?? 0 : 0o755) & 0o7777),
      uid: whiteout ? 0 : e?.uid ?? 0,
      gid: whiteout ? 0 : e?.gid ?? 0,
      size: whiteout
        ? 0
        : e?.type === "reg"
        ? e.size ?? 0
        : e?.type === "symlink"
        ? Buffer.byteLength(e.linkName ?? "")
        : 0,
      mtimeMs: parseModtime(e?.modtime),
      nlink: whiteout
        ? 1
        : n.children
        ? 2 + [...n.children.values()].filter((c) => c.children).length
        : Math.max(1, n.names),
      rdev: whiteout ? [0, 0] : [e?.devMajor ?? 0, e?.devMinor ?? 0],
      linkName: whiteout ? "" : e?.linkName ?? "",
      xattrs: whiteout || !e?.xattrs
        ? []
        : [...decodeXattrs(e)].map(([k, v]): [string, number[]] => [k, [...v]]),
      parentId: 0,
      entries: [],
    };
    out.push(s);
    return s;
  };
  const visit = (n: RefNode, parentId: number): number => {
    const known = served.get(n);
    if (known) return known.id;
    const s = serve(n, false);
    served.set(n, s);
    if (!n.children) return s.id;
    s.parentId = parentId || s.id;
    const whiteouts: [string, RefNode][] = [];
    for (const [name, c] of n.children) {
      if (parentId === 0 && HIDDEN.has(name)) continue;
      if (name === ".wh..wh..opq") s.xattrs.push(["trusted.overlay.opaque", [0x79]]);
      else if (name.startsWith(".wh.")) whiteouts.push([name.slice(4), c]);
      else s.entries.push([name, visit(c, s.id)]);
    }
    for (const [name, c] of whiteouts) {
      if (s.entries.some(([have]) => have === name)) continue;
      s.entries.push([name, serve(c, true).id]);
    }
    return s.id;
  };
  visit(nodeOf(""), 0);
  return out;
}

/** The same view of the tree under test. */
function servedTree(t: LayerTree): Served[] {
  const out: Served[] = [];
  for (let id = 1; id <= t.size; id++) {
    const n = t.node(id)!;
    out.push({
      id,
      path: n.path,
      mode: n.mode,
      uid: n.uid,
      gid: n.gid,
      size: n.size,
      mtimeMs: n.mtimeMs,
      nlink: n.nlink,
      rdev: [n.rdevMajor, n.rdevMinor],
      linkName: n.linkName,
      xattrs: [...n.xattrs].map(([k, v]): [string, number[]] => [k, [...v]]),
      parentId: n.parentId,
      entries: [...t.entries(id)],
    });
  }
  return out;
}

function memReader(b: Uint8Array) {
  return { size: b.length, read: (o: number, l: number) => Promise.resolve(b.slice(o, o + l)) };
}

describe("LayerTree against a reference walk of the TOC", () => {
  const blobs = new Map<string, Uint8Array>();
  let dir: string;
  before(async () => {
    for (const f of fs.readdirSync(FIXTURES).filter((f) => f.endsWith(".blob"))) {
      blobs.set(`Go ${f}`, new Uint8Array(fs.readFileSync(path.join(FIXTURES, f))));
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "tree-ref-"));
    const tar = path.join(dir, "in.tar");
    fs.writeFileSync(tar, buildTar(sampleLayer()));
    const variants = [
      { format: "gzip", minChunkSize: 0 },
      { format: "zstd", minChunkSize: 0 },
      { format: "gzip", minChunkSize: 16384 },
      { format: "zstd", minChunkSize: 16384, prioritizedFiles: ["b/hard2", "zeros", "big"] },
      { format: "gzip", minChunkSize: 0, prioritizedFiles: ["hard", "b/c/empty"] },
    ] as const;
    for (const v of variants) {
      const out = path.join(dir, `${blobs.size}.blob`);
      await convertLayer(tar, out, {
        ...v,
        prioritizedFiles: "prioritizedFiles" in v ? [...v.prioritizedFiles] : undefined,
        chunkSize: TEST_CHUNK,
      });
      const label = `ours ${v.format}${v.minChunkSize ? " packed" : ""}${
        "prioritizedFiles" in v ? " prioritized" : ""
      }`;
      blobs.set(label, new Uint8Array(fs.readFileSync(out)));
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("yields the reference tree for every fixture, Go-built and ours", async () => {
    assert.ok(blobs.size >= 9, `${blobs.size} fixtures`);
    for (const [label, bytes] of blobs) {
      const blob = await openBlob(memReader(bytes));
      const want = referenceTree((await blob.readToc()).entries);
      assert.ok(want.length > 5, label);
      assert.deepEqual(servedTree(await LayerTree.build(blob)), want, label);
      assert.deepEqual(servedTree(new LayerTree(blob)), want, `${label} (built at once)`);
    }
  });

  it("numbers every node alike in a second process", async () => {
    for (const [label, bytes] of blobs) {
      const file = path.join(dir, "other.blob");
      fs.writeFileSync(file, bytes);
      const here = servedTree(new LayerTree(await openBlob(memReader(bytes))))
        .map((s) => [s.id, s.path, s.entries]);
      const [cmd, ...args] = scriptCommand(CHILD, [file]);
      const there = JSON.parse(execFileSync(cmd, args, { encoding: "utf8" }));
      assert.deepEqual(there, JSON.parse(JSON.stringify(here)), label);
    }
  });
});
