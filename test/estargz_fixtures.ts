/**
 * Test helpers for the eStargz suites: a tar builder that emits every entry kind (PAX for long
 * and non-ASCII names, big ids, xattrs and sub-second mtimes) and the layer the round trips use.
 */
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { encodeGzipFooter, encodeToc } from "../src/estargz/mod.ts";
import type { TocEntry } from "../src/estargz/mod.ts";
import { testBytes } from "./_registry.ts";

/** One entry the builder writes. */
export interface TarSpec {
  name: string;
  type: "reg" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";
  data?: Uint8Array;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  userName?: string;
  groupName?: string;
  mtimeMs?: number;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, Uint8Array>;
}

const enc = new TextEncoder();
const TYPEFLAG = {
  reg: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6",
};

function field(b: Uint8Array, off: number, len: number, s: string): void {
  const bytes = enc.encode(s);
  b.set(bytes.subarray(0, len), off);
}

function octal(b: Uint8Array, off: number, len: number, n: number): void {
  field(b, off, len, n.toString(8).padStart(len - 1, "0"));
}

function header(name: string, typeflag: string, size: number, s: Partial<TarSpec>): Uint8Array {
  const b = new Uint8Array(512);
  field(b, 0, 100, name);
  octal(b, 100, 8, s.mode ?? 0o644);
  octal(b, 108, 8, Math.min(s.uid ?? 0, 0o7777777));
  octal(b, 116, 8, Math.min(s.gid ?? 0, 0o7777777));
  octal(b, 124, 12, size);
  octal(b, 136, 12, Math.floor((s.mtimeMs ?? 0) / 1000));
  b[156] = typeflag.charCodeAt(0);
  field(b, 157, 100, s.linkName ?? "");
  field(b, 257, 6, "ustar");
  field(b, 263, 2, "00");
  field(b, 265, 32, s.userName ?? "");
  field(b, 297, 32, s.groupName ?? "");
  octal(b, 329, 8, s.devMajor ?? 0);
  octal(b, 337, 8, s.devMinor ?? 0);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  field(b, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return b;
}

function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = enc.encode(` ${key}=`);
  const base = body.length + value.length + 1;
  let len = base + String(base).length;
  if (String(len).length !== String(base).length) len = base + String(len).length;
  const out = new Uint8Array(len);
  const head = enc.encode(`${len} ${key}=`);
  out.set(head, 0);
  out.set(value, head.length);
  out[len - 1] = 0x0a;
  return out;
}

function pad(n: number): Uint8Array {
  return new Uint8Array((512 - (n % 512)) % 512);
}

/** Builds a tar archive (with end-of-archive blocks) from `specs`. */
export function buildTar(specs: readonly TarSpec[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const s of specs) {
    const data = s.type === "reg" ? s.data ?? new Uint8Array(0) : new Uint8Array(0);
    const pax: Uint8Array[] = [];
    const ascii = (x: string) => /^[\x20-\x7e]*$/.test(x);
    if (enc.encode(s.name).length > 100 || !ascii(s.name)) {
      pax.push(paxRecord("path", enc.encode(s.name)));
    }
    if (s.linkName && (s.linkName.length > 100 || !ascii(s.linkName))) {
      pax.push(paxRecord("linkpath", enc.encode(s.linkName)));
    }
    if ((s.uid ?? 0) > 0o7777777) pax.push(paxRecord("uid", enc.encode(String(s.uid))));
    if ((s.gid ?? 0) > 0o7777777) pax.push(paxRecord("gid", enc.encode(String(s.gid))));
    if (s.mtimeMs !== undefined && s.mtimeMs % 1000 !== 0) {
      pax.push(paxRecord("mtime", enc.encode((s.mtimeMs / 1000).toFixed(3))));
    }
    for (const [k, v] of Object.entries(s.xattrs ?? {})) {
      pax.push(paxRecord(`SCHILY.xattr.${k}`, v));
    }
    if (pax.length) {
      const body = new Uint8Array(pax.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of pax) {
        body.set(p, o);
        o += p.length;
      }
      parts.push(header("PaxHeaders/x", "x", body.length, {}), body, pad(body.length));
    }
    const shortName = ascii(s.name) ? s.name.slice(0, 100) : "non-ascii";
    parts.push(header(shortName, TYPEFLAG[s.type], data.length, s), data, pad(data.length));
  }
  parts.push(new Uint8Array(1024));
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Deterministic pseudo-random bytes (the registry harness' generator). */
export const randomBytes: (n: number, seed: number) => Uint8Array = testBytes;

/** sha256 in the `sha256:…` form. */
export function sha256(b: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(b).digest("hex");
}

/** Chunk size the round trips use (small, so that files span several chunks quickly). */
export const TEST_CHUNK = 64 * 1024;

/** The layer of the round-trip tests: every entry kind and edge case of the issue. */
export function sampleLayer(): TarSpec[] {
  const t = 1700000000000;
  const longName = "long/" + "d".repeat(120) + "/" + "f".repeat(90) + ".txt";
  return [
    { name: "./", type: "dir", mode: 0o755, mtimeMs: t },
    // Directories out of order: the child comes before its parent.
    { name: "b/c/", type: "dir", mode: 0o700, mtimeMs: t },
    { name: "b/", type: "dir", mode: 0o755, mtimeMs: t, uid: 1, gid: 2 },
    { name: "b/c/empty", type: "reg", mode: 0o600, mtimeMs: t },
    { name: "exact", type: "reg", data: randomBytes(TEST_CHUNK, 1), mtimeMs: t },
    { name: "exact-minus", type: "reg", data: randomBytes(TEST_CHUNK - 1, 2), mtimeMs: t },
    { name: "exact-plus", type: "reg", data: randomBytes(TEST_CHUNK + 1, 3), mtimeMs: t },
    { name: "big", type: "reg", data: randomBytes(5 * TEST_CHUNK + 123, 4), mtimeMs: t },
    { name: "zeros", type: "reg", data: new Uint8Array(3 * TEST_CHUNK + 7), mtimeMs: t },
    { name: "small1", type: "reg", data: enc.encode("one"), mtimeMs: t },
    { name: "small2", type: "reg", data: enc.encode("two!"), mtimeMs: t },
    { name: longName, type: "reg", data: enc.encode("long name"), mtimeMs: t },
    { name: "données/日本語.txt", type: "reg", data: enc.encode("utf-8"), mtimeMs: t },
    { name: "sym", type: "symlink", linkName: "b/c/empty", mtimeMs: t },
    { name: "sym-abs", type: "symlink", linkName: "/etc/passwd", mtimeMs: t },
    { name: "hard", type: "hardlink", linkName: "small1", mtimeMs: t },
    { name: "b/hard2", type: "hardlink", linkName: "hard", mtimeMs: t },
    { name: "dev/null", type: "char", devMajor: 1, devMinor: 3, mode: 0o666, mtimeMs: t },
    { name: "dev/sda", type: "block", devMajor: 8, devMinor: 0, mode: 0o660, mtimeMs: t },
    { name: "dev/fifo", type: "fifo", mode: 0o644, mtimeMs: t },
    {
      name: "caps",
      type: "reg",
      data: enc.encode("ping"),
      mtimeMs: t,
      xattrs: {
        "user.comment": enc.encode("hello"),
        "security.capability": new Uint8Array([
          1,
          0,
          0,
          2,
          0,
          0x20,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
        ]),
      },
    },
    { name: ".wh.gone", type: "reg", mtimeMs: t },
    { name: "b/.wh..wh..opq", type: "reg", mtimeMs: t },
    {
      name: "bigids",
      type: "reg",
      data: enc.encode("ids"),
      uid: 3000000,
      gid: 4000000,
      userName: "alice",
      groupName: "staff",
      mtimeMs: t,
    },
    { name: "subsec", type: "reg", data: enc.encode("time"), mtimeMs: t + 500 },
    // No parent entries: the directories must be implied.
    { name: "implied/deep/file", type: "reg", data: enc.encode("deep"), mtimeMs: t },
    { name: "dup", type: "reg", data: enc.encode("first"), mtimeMs: t },
    { name: "dup", type: "reg", data: enc.encode("second wins"), mtimeMs: t },
  ];
}

/**
 * The layer behind `test/fixtures/estargz/go-*.blob`, which the Go estargz package (v0.12,
 * `estargz.Build`, chunk size 4096) wrote; the `.list` files are what its reader saw.
 */
export function goFixtureLayer(): TarSpec[] {
  const t = 1700000000000;
  return [
    { name: "./", type: "dir", mode: 0o755, mtimeMs: t },
    { name: "etc/", type: "dir", mode: 0o755, mtimeMs: t },
    {
      name: "etc/os-release",
      type: "reg",
      data: enc.encode("ID=test\n"),
      mtimeMs: t,
      userName: "root",
      groupName: "root",
    },
    { name: "bin/", type: "dir", mode: 0o755, mtimeMs: t },
    {
      name: "bin/tool",
      type: "reg",
      data: randomBytes(3 * 4096 + 100, 11),
      mode: 0o755,
      mtimeMs: t,
    },
    { name: "bin/exact", type: "reg", data: randomBytes(4096, 12), mode: 0o755, mtimeMs: t },
    { name: "bin/empty", type: "reg", mode: 0o644, mtimeMs: t },
    { name: "bin/link", type: "symlink", linkName: "tool", mtimeMs: t },
    { name: "bin/hard", type: "hardlink", linkName: "bin/tool", mtimeMs: t },
    { name: "dev/null", type: "char", devMajor: 1, devMinor: 3, mode: 0o666, mtimeMs: t },
    { name: "dev/fifo", type: "fifo", mode: 0o600, mtimeMs: t },
    { name: "données/日本語.txt", type: "reg", data: enc.encode("utf-8 name"), mtimeMs: t },
    {
      name: "caps",
      type: "reg",
      data: enc.encode("x"),
      mtimeMs: t,
      xattrs: { "security.capability": new Uint8Array([1, 0, 0, 2]) },
    },
    { name: ".wh.gone", type: "reg", mtimeMs: t },
    {
      name: "bigids",
      type: "reg",
      data: enc.encode("ids"),
      uid: 3000000,
      gid: 4000000,
      mtimeMs: t,
    },
    { name: "zeros", type: "reg", data: new Uint8Array(2 * 4096 + 1), mtimeMs: t },
  ];
}

/**
 * A gzip eStargz blob that holds only a TOC of `entries` after `dataSize` zero bytes: enough to
 * open and index (file contents are never read). Entry offsets must point into the zeros.
 */
export function tocOnlyBlob(entries: readonly TocEntry[], dataSize: number): Uint8Array {
  const json = encodeToc({ version: 1, entries: [...entries] });
  const header = new Uint8Array(512);
  header.set(new TextEncoder().encode("stargz.index.json"));
  header.set(new TextEncoder().encode(json.length.toString(8).padStart(11, "0")), 124);
  const tar = Buffer.concat([
    header,
    json,
    new Uint8Array((512 - (json.length % 512)) % 512 + 1024),
  ]);
  return Buffer.concat([
    new Uint8Array(dataSize),
    gzipSync(tar, { level: 6 }),
    encodeGzipFooter(dataSize),
  ]);
}
