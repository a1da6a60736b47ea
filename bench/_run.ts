/** Child processes of the benchmarks: commands run to completion, and the daemons' flags. */

import { spawn } from "node:child_process";

/** Output and duration of a finished command. */
export interface Ran {
  stdout: string;
  stderr: string;
  secs: number;
}

/** Runs `argv` to completion; throws unless it exits 0. */
export function run(argv: readonly string[]): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => {
      const secs = (performance.now() - t0) / 1000;
      if (code === 0) resolve({ stdout, stderr, secs });
      else reject(new Error(`${argv.join(" ")}: exit ${code}: ${stderr.trim()}`));
    });
  });
}

/** `sh -c script` with the paths passed as "$1", "$2", … (no quoting trouble). */
export function shell(script: string, ...args: string[]): Promise<Ran> {
  return run(["sh", "-c", script, "sh", ...args]);
}

/**
 * The flags both snapshotter daemons (ours after `serve`, upstream's
 * containerd-stargz-grpc) take alike.
 */
export function daemonFlags(
  address: string,
  root: string,
  config: string,
  logLevel: string,
): string[] {
  return ["--address", address, "--root", root, "--config", config, "--log-level", logLevel];
}
