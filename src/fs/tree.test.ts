import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  blocksOf,
  LayerTree,
  OPAQUE_XATTR,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from "./_tree.ts";
import { openBlob } from "../estargz/mod.ts";
import { tocOnlyBlob } from "../../test/estargz_fixtures.ts";
import type { TocEntry } from "../estargz/mod.ts";

const DATA = 4096;

/**
 * A tree over a real blob whose TOC holds `entries` (file contents are never read, so the data
 * region is zeros; regular files get distinct offsets in it).
 */
async function treeOf(entries: TocEntry[]): Promise<LayerTree> {
  let next = 0;
  const withOffsets = entries.map((e) =>
    e.type === "reg" && (e.size ?? 0) > 0 && e.offset === undefined
      ? { ...e, offset: next += 16 }
      : e
  );
  const bytes = tocOnlyBlob(withOffsets, DATA);
  const blob = await openBlob({
    size: bytes.length,
    read: (o, l) => Promise.resolve(bytes.subarray(o, o + l)),
  });
  return new LayerTree(blob);
}

const names = (t: LayerTree, p: string): string[] => {
  const n = t.lookupPath(p);
  return n ? [...t.entries(n.id)].map(([name]) => name) : [];
};

describe("LayerTree", () => {
  it("keeps TOC order, implies missing parents and hides the format's own entries", async () => {
    const t = await treeOf([
      { name: ".no.prefetch.landmark", type: "reg", size: 1 },
      { name: "b", type: "reg", size: 3, mode: 0o644 },
      { name: "a/deep/x", type: "reg", size: 1 },
      { name: "a", type: "dir", mode: 0o700, uid: 5 },
      { name: "stargz.index.json", type: "reg" },
    ]);
    assert.deepEqual(names(t, ""), ["b", "a"]);
    assert.deepEqual(names(t, "a"), ["deep"]);
    const a = t.lookupPath("a")!;
    assert.equal(a.mode, S_IFDIR | 0o700);
    assert.equal(a.uid, 5);
    assert.equal(t.lookupPath("a/deep")!.mode, S_IFDIR | 0o755);
    assert.equal(a.nlink, 3);
    assert.equal(t.root.nlink, 3);
  });

  it("maps modes, links, devices, mtimes, xattrs and blocks", async () => {
    const t = await treeOf(
      [
        {
          name: "f",
          type: "reg",
          size: 5000,
          mode: 0o4755,
          modtime: "2021-03-04T05:06:07Z",
          xattrs: { "user.k": Buffer.from("v\0x").toString("base64") },
        },
        { name: "l", type: "symlink", linkName: "f/ü" },
        { name: "c", type: "char", devMajor: 1, devMinor: 3, mode: 0o666 },
      ] satisfies TocEntry[],
    );
    const f = t.lookupPath("f")!;
    assert.equal(f.mode, S_IFREG | 0o4755);
    assert.equal(f.mtimeMs, Date.UTC(2021, 2, 4, 5, 6, 7));
    assert.deepEqual([...f.xattrs.get("user.k")!], [0x76, 0, 0x78]);
    assert.equal(blocksOf(f.size), 16);
    const l = t.lookupPath("l")!;
    assert.equal(l.mode & S_IFMT, S_IFLNK);
    assert.equal(l.size, 4, "symlink size is the byte length of its target");
    const c = t.lookupPath("c")!;
    assert.deepEqual([c.mode, c.rdevMajor, c.rdevMinor], [S_IFCHR | 0o666, 1, 3]);
  });

  it("shares one node among hardlinks and counts links", async () => {
    const t = await treeOf([
      { name: "x", type: "reg", size: 2 },
      { name: "d/y", type: "hardlink", linkName: "x" },
      { name: "z", type: "hardlink", linkName: "d/y" },
    ]);
    const x = t.lookupPath("x")!;
    assert.equal(t.lookupPath("d/y")!.id, x.id);
    assert.equal(t.lookupPath("z")!.id, x.id);
    assert.equal(x.nlink, 3);
    assert.equal(x.path, "x");
  });

  it("serves whiteouts as 0:0 character devices and opaque markers as xattrs", async () => {
    const t = await treeOf([
      { name: "etc", type: "dir", mode: 0o755 },
      { name: "etc/.wh.passwd", type: "reg" },
      { name: "etc/.wh.group", type: "reg" },
      { name: "etc/group", type: "reg", size: 1 },
      { name: "var/.wh..wh..opq", type: "reg" },
      { name: "var", type: "dir", mode: 0o711 },
    ]);
    assert.deepEqual(names(t, "etc"), ["group", "passwd"]);
    const wh = t.lookupPath("etc/passwd")!;
    assert.equal(wh.whiteout, true);
    assert.equal(wh.mode, S_IFCHR);
    assert.deepEqual([wh.rdevMajor, wh.rdevMinor], [0, 0]);
    assert.equal(
      t.lookupPath("etc/group")!.mode & S_IFMT,
      S_IFREG,
      "a real entry beats its whiteout",
    );
    const v = t.lookupPath("var")!;
    assert.equal(new TextDecoder().decode(v.xattrs.get(OPAQUE_XATTR)), "y");
    assert.equal(v.mode, S_IFDIR | 0o711, "metadata after the marker keeps the opaque xattr");
    assert.equal(names(t, "var").length, 0);
  });

  it("lets a later entry of the same name win", async () => {
    const t = await treeOf([
      { name: "a", type: "reg", size: 1 },
      { name: "b", type: "reg", size: 1 },
      { name: "a", type: "symlink", linkName: "b" },
    ]);
    assert.deepEqual(names(t, ""), ["b", "a"]);
    assert.equal(t.lookupPath("a")!.linkName, "b");
  });

  it("gives stable ids from 1 (the root)", async () => {
    const entries: TocEntry[] = [{ name: "a", type: "reg" }, { name: "b", type: "dir" }];
    const t1 = await treeOf(entries);
    const t2 = await treeOf(entries);
    assert.equal(t1.root.id, 1);
    assert.equal(t1.node(1)!.id, t1.root.id);
    assert.equal(t1.lookupPath("b")!.id, t2.lookupPath("b")!.id);
    assert.equal(t1.node(999), undefined);
  });

  it("gives every node the same id in two independent opens of a layer (restart relies on it)", async () => {
    const entries: TocEntry[] = [
      { name: "etc/", type: "dir", mode: 0o755 },
      { name: "etc/conf", type: "reg", size: 5, mode: 0o644 },
      { name: "etc/hard", type: "hardlink", linkName: "etc/conf" },
      { name: "etc/.wh.gone", type: "reg", size: 0 },
      { name: "opaque/.wh..wh..opq", type: "reg", size: 0 },
      { name: "opaque/x", type: "symlink", linkName: "../etc/conf" },
      { name: "z/deep/er/file", type: "reg", size: 3 },
      { name: "dup", type: "reg", size: 1 },
      { name: "dup", type: "reg", size: 2 },
      ...Array.from(
        { length: 50 },
        (_, i): TocEntry => ({ name: `many/f${i}`, type: "reg", size: i }),
      ),
    ];
    const ids = (t: LayerTree): [string, number][] => {
      const out: [string, number][] = [];
      const walk = (p: string, id: number): void => {
        out.push([p, id]);
        for (const [name, c] of t.entries(id)) walk(p ? `${p}/${name}` : name, c);
      };
      walk("", t.rootId);
      return out;
    };
    const a = ids(await treeOf(entries));
    const b = ids(await treeOf(entries));
    // 13 paths besides many/f*, each a distinct walk position (hardlinks share one id).
    assert.equal(a.length, 13 + 50);
    assert.equal(new Set(a.map(([, id]) => id)).size, 13 + 50 - 1);
    assert.deepEqual(a, b);
  });
});
