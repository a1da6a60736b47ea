/**
 * Helpers for the lazy layer filesystem end-to-end tests: a rich layer tree made with real tools,
 * a listing of a tree through `find`/`stat`/`getfattr`/`sha256sum` (so an extracted tar and a
 * mount can be compared), and `stargz mount` run as a child process.
 */
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { startCli, waitExit } from "./_cli.ts";
import type { CliResult } from "./_cli.ts";
import { ok, sh } from "./_fuse.ts";
import { patternBytes } from "./_images.ts";

/**
 * Fills `dir` with every kind of entry a layer can hold: files around chunk boundaries, a
 * multi-chunk file, sparse-looking zeros, symlinks, hardlinks, devices, a fifo, odd modes and
 * owners, xattrs, mtimes, long and non-ASCII names.
 */
export async function makeRichTree(dir: string, chunk: number): Promise<void> {
  const w = (p: string, data: Uint8Array | string) => {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), data);
  };
  w("empty", "");
  w("one", "x");
  for (const d of [-1, 0, 1]) {
    w(`sizes/chunk${d >= 0 ? "+" : ""}${d}`, patternBytes(chunk + d, 10 + d));
  }
  w("sizes/4095", patternBytes(4095, 1));
  w("sizes/4096", patternBytes(4096, 2));
  w("sizes/4097", patternBytes(4097, 3));
  w("big/multi", patternBytes(chunk * 5 + 123, 7));
  w("big/zeros", new Uint8Array(chunk * 3));
  w(`names/${"long-".repeat(40)}name`, "long");
  w("names/ünïcødé ✓", "unicode");
  w("etc/app.conf", "key=value\n");
  fs.symlinkSync("../etc/app.conf", path.join(dir, "names/link"));
  fs.symlinkSync("/nonexistent/target", path.join(dir, "names/dangling"));
  fs.linkSync(path.join(dir, "etc/app.conf"), path.join(dir, "names/hard1"));
  fs.linkSync(path.join(dir, "etc/app.conf"), path.join(dir, "hard2"));
  fs.mkdirSync(path.join(dir, "dev"), { recursive: true });
  await ok(["mknod", path.join(dir, "dev/null"), "c", "1", "3"]);
  await ok(["mknod", path.join(dir, "dev/loop9"), "b", "7", "9"]);
  await ok(["mknod", path.join(dir, "dev/big"), "c", "300", "70000"]);
  await ok(["mkfifo", path.join(dir, "dev/fifo")]);
  fs.mkdirSync(path.join(dir, "modes/sticky"), { recursive: true });
  fs.chmodSync(path.join(dir, "modes/sticky"), 0o1777);
  fs.mkdirSync(path.join(dir, "modes/private"));
  fs.chmodSync(path.join(dir, "modes/private"), 0o700);
  w("modes/setuid", "suid");
  fs.chmodSync(path.join(dir, "modes/setuid"), 0o4755);
  w("owners/big", "owner");
  fs.chownSync(path.join(dir, "owners/big"), 3_000_000, 2_500_000);
  w("owners/small", "owner");
  fs.chownSync(path.join(dir, "owners/small"), 1234, 5678);
  await ok(["setfattr", "-n", "user.note", "-v", "hello world", path.join(dir, "etc/app.conf")]);
  await ok(["setfattr", "-n", "user.bin", "-v", "0x00ff10", path.join(dir, "etc")]);
  await ok(["setfattr", "-n", "trusted.custom", "-v", "t", path.join(dir, "one")]);
  await ok([
    "touch",
    "-h",
    "-d",
    "2020-02-29 12:34:56",
    path.join(dir, "one"),
    path.join(dir, "names/link"),
  ]);
  await ok(["touch", "-d", "1999-12-31 23:59:59", path.join(dir, "sizes")]);
}

/** Tars `dir` with the real tar, keeping xattrs and numeric owners. */
export async function tarTree(dir: string, out: string): Promise<void> {
  await ok([
    "tar",
    "--xattrs",
    "--xattrs-include=*",
    "--numeric-owner",
    "-C",
    dir,
    "-cf",
    out,
    ".",
  ]);
}

/**
 * One line per entry of the tree at `dir` (sorted): path, type, mode, owner, size (files),
 * mtime (seconds), link target, device numbers, link count, content digest and xattrs. Two
 * trees are equal when their listings are.
 */
export async function listTree(dir: string, opts: { skip?: RegExp } = {}): Promise<string[]> {
  const out = await ok([
    "find",
    dir,
    "-mindepth",
    "1",
    "-printf",
    "%P\\t%y\\t%m\\t%U:%G\\t%s\\t%T@\\t%l\\t%n\\n",
  ]);
  const rows: string[] = [];
  for (const line of out.trim().split("\n")) {
    const [p, type, mode, owner, size, mtime, link, nlink] = line.split("\t");
    if (opts.skip?.test(p)) continue;
    const full = path.join(dir, p);
    let extra = "";
    if (type === "f") extra = (await ok(["sha256sum", full])).split(" ")[0];
    if (type === "c" || type === "b") extra = (await ok(["stat", "-c", "%t:%T", full])).trim();
    const xattrs = type === "l"
      ? ""
      : (await sh(["getfattr", "--absolute-names", "-d", "-m", "-", "-e", "hex", full])).stdout
        .split("\n").filter((l) => l && !l.startsWith("#")).sort().join(",");
    rows.push(
      [
        p,
        type,
        mode,
        owner,
        type === "f" ? size : "",
        Math.round(Number(mtime)),
        link,
        type === "d" ? "" : nlink,
        extra,
        xattrs,
      ].join("|"),
    );
  }
  return rows.sort();
}

/** Groups of paths sharing an inode (hardlinks), as sorted strings. */
export async function inodeGroups(dir: string): Promise<string[]> {
  const out = await ok(["find", dir, "-mindepth", "1", "-type", "f", "-printf", "%i %P\\n"]);
  const byIno = new Map<string, string[]>();
  for (const line of out.trim().split("\n")) {
    const i = line.indexOf(" ");
    const list = byIno.get(line.slice(0, i)) ?? [];
    list.push(line.slice(i + 1));
    byIno.set(line.slice(0, i), list);
  }
  return [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort().join(",")).sort();
}

/** True when `dir` is a mount point. */
export function isMounted(dir: string): boolean {
  const target = path.resolve(dir);
  return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) =>
    l.split(" ")[4] === target
  );
}

/** A `stargz mount` child process. */
export interface MountChild {
  child: ChildProcess;
  done: Promise<CliResult>;
  /** SIGTERM, then the exit status. */
  stop(): Promise<CliResult>;
}

/** Runs `stargz mount args… MOUNTPOINT` and waits until the mount is there. */
export async function mountCli(
  args: readonly string[],
  mountpoint: string,
  env?: NodeJS.ProcessEnv,
): Promise<MountChild> {
  const child = startCli(["mount", ...args, mountpoint], env);
  const done = waitExit(child, 600_000);
  let exited: CliResult | undefined;
  done.then((r) => (exited = r));
  const deadline = Date.now() + 60_000;
  while (!isMounted(mountpoint)) {
    if (exited) throw new Error(`stargz mount exited ${exited.code}: ${exited.stderr}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error("stargz mount did not mount within 60 s");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    done,
    async stop() {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGTERM");
      const r = await done;
      if (isMounted(mountpoint)) await sh(["umount", "-l", mountpoint]);
      return r;
    },
  };
}
