// The baseline of bench/fuse.ts: the same synthetic tree served by fuse-native (libfuse 2
// bindings, Node only). Run as `node bench/_fuse_native.cjs <mountpoint> <size> <entries>
// <trees>`; prints "ready" once mounted and unmounts on SIGTERM.
//
// Tree (identical to bench/fuse.ts): /big is <size> bytes repeating a 1 MiB block whose byte i
// is (i * 7 + (i >> 8)) & 255; /t<r>/d<k>/f<j> (r < trees) hold <entries> entries each, 100
// files per directory, every file 5 bytes "data\n".
"use strict";
const Fuse = require("fuse-native");

const [mnt, sizeArg, entriesArg, treesArg] = process.argv.slice(2);
const size = Number(sizeArg);
const entries = Number(entriesArg);
const trees = Number(treesArg);

const BLOCK = Buffer.alloc(1 << 20);
for (let i = 0; i < BLOCK.length; i++) BLOCK[i] = (i * 7 + (i >> 8)) & 255;
const FILE_DATA = Buffer.from("data\n");

const when = new Date(1_700_000_000_000);
const dirStat = {
  mode: 0o040755,
  size: 0,
  nlink: 2,
  uid: 0,
  gid: 0,
  mtime: when,
  atime: when,
  ctime: when,
};
const fileStat = {
  mode: 0o100644,
  size: 5,
  nlink: 1,
  uid: 0,
  gid: 0,
  mtime: when,
  atime: when,
  ctime: when,
};
const bigStat = { ...fileStat, size };

/** path -> names (directories only) */
const dirs = new Map();
const stats = new Map();
dirs.set("/", ["big"]);
stats.set("/", dirStat);
stats.set("/big", bigStat);
for (let r = 0; r < trees; r++) {
  const top = `/t${r}`;
  dirs.get("/").push(`t${r}`);
  dirs.set(top, []);
  stats.set(top, dirStat);
  const ndirs = Math.ceil(entries / 101);
  let made = 0;
  for (let k = 0; k < ndirs && made < entries; k++) {
    const d = `${top}/d${k}`;
    dirs.get(top).push(`d${k}`);
    dirs.set(d, []);
    stats.set(d, dirStat);
    made++;
    for (let j = 0; j < 100 && made < entries; j++, made++) {
      dirs.get(d).push(`f${j}`);
      stats.set(`${d}/f${j}`, fileStat);
    }
  }
}

const ops = {
  getattr(path, cb) {
    const st = stats.get(path);
    if (!st) return cb(Fuse.ENOENT);
    cb(0, st);
  },
  readdir(path, cb) {
    const names = dirs.get(path);
    if (!names) return cb(Fuse.ENOENT);
    cb(0, names);
  },
  open(_path, _flags, cb) {
    cb(0, 42);
  },
  release(_path, _fd, cb) {
    cb(0);
  },
  read(path, _fd, buf, len, pos, cb) {
    if (path === "/big") {
      const n = Math.max(0, Math.min(len, size - pos));
      let done = 0;
      while (done < n) {
        const at = (pos + done) % BLOCK.length;
        const take = Math.min(BLOCK.length - at, n - done);
        BLOCK.copy(buf, done, at, at + take);
        done += take;
      }
      return cb(n);
    }
    const n = Math.max(0, Math.min(len, FILE_DATA.length - pos));
    FILE_DATA.copy(buf, 0, pos, pos + n);
    cb(n);
  },
};

const fuse = new Fuse(mnt, ops, {
  allowOther: true,
  kernelCache: true,
  entryTimeout: 3600,
  attrTimeout: 3600,
  maxRead: 1 << 20,
  timeout: false,
  force: true,
  mkdir: true,
});
fuse.mount((err) => {
  if (err) {
    console.error("fuse-native mount failed:", err.message);
    process.exit(1);
  }
  console.log("ready");
});
process.on("SIGTERM", () => fuse.unmount(() => process.exit(0)));
