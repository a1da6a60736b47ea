import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as path from "node:path";

/** A path we could not prepare for serving; the message names it. */
export class SocketPathError extends Error {
  override name = "SocketPathError";
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === "ENOENT";
}

async function answers(socketPath: string): Promise<boolean> {
  return await new Promise((resolve) => {
    const conn = net.createConnection(socketPath);
    conn.once("connect", () => {
      conn.destroy();
      resolve(true);
    });
    conn.once("error", () => resolve(false));
  });
}

/**
 * Makes `socketPath` ready for `listen`: creates its directory (0700, as the Go daemon does),
 * removes a stale socket left by a dead daemon, and refuses when a live daemon still answers
 * there. Returns the directories it created, so a failed start can remove them again.
 */
export async function prepareSocketPath(socketPath: string): Promise<string[]> {
  const dir = path.dirname(path.resolve(socketPath));
  const created: string[] = [];
  for (let d = dir;; d = path.dirname(d)) {
    try {
      await fs.stat(d);
      break;
    } catch (err) {
      if (!isMissing(err)) {
        throw new SocketPathError(`socket directory ${d}: ${(err as Error).message}`);
      }
      created.unshift(d);
      if (d === path.dirname(d)) break;
    }
  }
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await fs.access(dir, fs.constants.W_OK);
  } catch (err) {
    await removeCreated(created);
    throw new SocketPathError(`cannot use socket directory ${dir}: ${(err as Error).message}`);
  }
  let st;
  try {
    st = await fs.lstat(socketPath);
  } catch (err) {
    if (isMissing(err)) return created;
    throw new SocketPathError(`socket ${socketPath}: ${(err as Error).message}`);
  }
  if (!st.isSocket()) {
    throw new SocketPathError(`socket ${socketPath}: exists and is not a socket`);
  }
  if (await answers(socketPath)) {
    throw new SocketPathError(`socket ${socketPath}: another process is already serving on it`);
  }
  await fs.rm(socketPath, { force: true });
  return created;
}

/** Removes directories created by {@link prepareSocketPath}, deepest first, if still empty. */
export async function removeCreated(dirs: readonly string[]): Promise<void> {
  for (const d of [...dirs].reverse()) await fs.rmdir(d).catch(() => {});
}
