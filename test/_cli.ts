/** Helpers for end-to-end tests that run the `stargz` CLI from source with the current runtime. */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import * as path from "node:path";
import { scriptCommand } from "../src/runtime/mod.ts";

/** Absolute path of the CLI entry point. */
export const MAIN_TS: string = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  "../src/main.ts",
);

/** Output and exit status of a finished CLI run. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Starts `stargz args…` from source; the caller owns the process. */
export function startCli(args: readonly string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const [cmd, ...rest] = scriptCommand(MAIN_TS, args);
  return spawn(cmd, rest, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
}

/** Collects a process' output until it exits (killing it after `timeoutMs`). */
export function waitExit(child: ChildProcess, timeoutMs = 60_000): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => (stdout += d));
  child.stderr?.on("data", (d) => (stderr += d));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      // Let the pipes drain before reporting.
      setTimeout(() => resolve({ code, signal, stdout, stderr }), 20);
    });
  });
}

/** Runs `stargz args…` from source to completion. */
export function runCli(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<CliResult> {
  return waitExit(startCli(args, env));
}

/** Resolves once `predicate` holds, polling every 50 ms; rejects after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Sends `sig` to a child. Deno's `ChildProcess.kill()` reports the exit as (null, sig) even when
 * the child handled the signal and exited 0, so signal through `process.kill` to see the real
 * exit status on both runtimes.
 */
export function sendSignal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, sig);
}
