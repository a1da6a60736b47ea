/**
 * The daemon: prepares the root and socket, serves gRPC on the unix socket, and shuts down
 * cleanly (socket removed) when asked.
 */
import * as grpc from "@grpc/grpc-js";
import * as fs from "node:fs/promises";
import type { Config } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import { prepareSocketPath, removeCreated } from "./_socket.ts";
import { prepareRoot } from "./_root.ts";

export { SocketPathError } from "./_socket.ts";
export { RootDirError } from "./_root.ts";

/** What `stargz serve` needs to start. */
export interface DaemonOptions {
  address: string;
  root: string;
  config: Config;
  log: Logger;
}

/** A running daemon. */
export interface Daemon {
  /** Stops serving, releases what the daemon owns and removes the socket. */
  stop(): Promise<void>;
}

function bind(server: grpc.Server, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix://${address}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
}

function shutdown(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Starts the daemon; on failure nothing it created is left behind. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const rootCreated = await prepareRoot(opts.root);
  let socketDirs: string[] = [];
  const server = new grpc.Server();
  try {
    socketDirs = await prepareSocketPath(opts.address);
    await bind(server, opts.address);
  } catch (err) {
    server.forceShutdown();
    await removeCreated(socketDirs);
    if (rootCreated) await fs.rm(opts.root, { recursive: true, force: true });
    throw err;
  }
  opts.log.info("serving", { address: opts.address, root: opts.root });
  return {
    async stop(): Promise<void> {
      await shutdown(server);
      await fs.rm(opts.address, { force: true });
      opts.log.info("stopped", { address: opts.address });
    },
  };
}
