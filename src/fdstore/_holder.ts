/**
 * `stargz fd-holder`: keeps copies of the daemon's FUSE descriptors while daemons come and go.
 * It exits once it keeps nothing and no daemon is connected, so it never outlives its use.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as v from "valibot";
import { brokenFds, closeFd, takeFd } from "../runtime/mod.ts";
import { PROTOCOL, type Reply, Request } from "./_protocol.ts";

/** How long a holder nobody talks to and that keeps nothing waits before it exits. */
const IDLE_EXIT_MS = 10_000;
/** How often kept descriptors are checked for connections that ended without a `drop`. */
const SWEEP_MS = 2000;

/** Serves the holder protocol on the unix socket `socketPath` until idle; resolves to 0. */
export function runHolder(socketPath: string): Promise<number> {
  const kept = new Map<string, number>();
  let clients = 0;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let done!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (done = resolve));

  const answer = (req: Request): Reply => {
    switch (req.op) {
      case "hold": {
        const fd = takeFd(req.pid, req.fd);
        const old = kept.get(req.name);
        if (old !== undefined) closeFd(old);
        kept.set(req.name, fd);
        return { ok: true };
      }
      case "drop": {
        const fd = kept.get(req.name);
        if (fd !== undefined) closeFd(fd);
        kept.delete(req.name);
        return { ok: true };
      }
      case "list":
        return {
          ok: true,
          protocol: PROTOCOL,
          pid: process.pid,
          fds: [...kept].map(([name, fd]) => ({ name, fd })),
        };
    }
  };

  const server = net.createServer((conn) => {
    clients++;
    clearTimeout(idleTimer);
    let buffered = "";
    conn.setEncoding("utf8");
    conn.on("data", (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let reply: Reply;
        try {
          reply = answer(v.parse(Request, JSON.parse(line)));
        } catch (err) {
          reply = { ok: false, error: err instanceof Error ? err.message : String(err) };
        }
        conn.write(JSON.stringify(reply) + "\n");
      }
    });
    conn.on("error", () => {});
    conn.on("close", () => {
      clients--;
      armIdle();
    });
  });
  // A mount unmounted while no daemon ran (or by hand) ends its connection: its descriptor
  // polls as an error and is of no use to anyone. A removed socket means nobody can reach us.
  const sweep = setInterval(() => {
    const names = [...kept.keys()];
    const broken = brokenFds(names.map((n) => kept.get(n)!));
    names.forEach((n, i) => {
      if (!broken[i]) return;
      closeFd(kept.get(n)!);
      kept.delete(n);
    });
    if (!ours()) return stop();
    if (broken.some((b) => b)) armIdle();
  }, SWEEP_MS);
  // The socket file we listen on, by inode: a holder started after us (while we were exiting)
  // binds the same path, and neither our exit nor our sweep may take its file away.
  let socketIno: number | undefined;
  const ours = (): boolean => {
    try {
      return fs.statSync(socketPath).ino === socketIno;
    } catch {
      return false;
    }
  };
  const stop = (): void => {
    clearInterval(sweep);
    clearTimeout(idleTimer);
    server.close();
    if (ours()) fs.rmSync(socketPath, { force: true });
    done(0);
  };
  const armIdle = (): void => {
    clearTimeout(idleTimer);
    if (clients > 0 || kept.size > 0) return;
    idleTimer = setTimeout(() => {
      if (clients === 0 && kept.size === 0) stop();
    }, IDLE_EXIT_MS);
  };
  // Signals that end a shell session must not take the containers' mounts with them; SIGTERM
  // is an explicit request to let go.
  process.on("SIGHUP", () => {});
  process.on("SIGINT", () => {});
  process.once("SIGTERM", stop);
  fs.rmSync(socketPath, { force: true });
  const oldMask = process.umask(0o077);
  server.listen(socketPath, () => {
    process.umask(oldMask);
    socketIno = fs.statSync(socketPath).ino;
    armIdle();
  });
  server.on("error", () => done(1));
  return finished;
}
