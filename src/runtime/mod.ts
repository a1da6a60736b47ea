/**
 * The one place that knows which JavaScript runtime runs us. Everything else uses node:* APIs
 * that Bun and Deno both provide, and asks this module for the few things that differ.
 */

/** The runtimes the source is written for. */
export type RuntimeName = "bun" | "deno" | "node";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

/** Which runtime executes this process. */
export function runtimeName(): RuntimeName {
  if (typeof g.Bun !== "undefined") return "bun";
  if (typeof g.Deno !== "undefined") return "deno";
  return "node";
}

/** The runtime's own version string, e.g. `bun 1.4.5`. */
export function runtimeVersion(): string {
  switch (runtimeName()) {
    case "bun":
      return `bun ${g.Bun.version}`;
    case "deno":
      return `deno ${g.Deno.version.deno}`;
    default:
      return `node ${process.versions.node}`;
  }
}

/** True when running as a `bun build --compile` executable. */
export function isCompiledBinary(): boolean {
  // Bun serves bundled sources from a virtual "/$bunfs/" filesystem inside compiled executables.
  return runtimeName() === "bun" && (process.argv[1] ?? "").startsWith("/$bunfs/");
}

/** The command-line arguments after the program (and script) name. */
export function programArgs(): string[] {
  return process.argv.slice(2);
}

/**
 * The name the program was invoked as (basename of argv[0] for a compiled binary, of the script
 * otherwise), so that a link named `containerd-stargz-grpc` can behave like the Go daemon.
 */
export function invokedName(): string {
  const first = isCompiledBinary() ? process.argv0 || process.execPath : process.argv[1] ?? "";
  const parts = first.split("/");
  return parts[parts.length - 1] ?? "";
}

/**
 * argv that runs the TypeScript file `script` with the current runtime (tests use it to start
 * the CLI from source): `bun script …` or `deno run -A script …`.
 */
export function scriptCommand(script: string, args: readonly string[] = []): string[] {
  if (runtimeName() === "deno") return [process.execPath, "run", "-A", script, ...args];
  return [process.execPath, script, ...args];
}

/**
 * True when {@link pollingReader} works here. Bun needs it: its fs thread pool has one thread per
 * CPU, so reads that block (e.g. on /dev/fuse) would starve every other async fs call of the
 * process. Deno runs blocking fs calls on a pool that grows to 512 threads and uses `fs.read`.
 */
export function hasPollingReader(): boolean {
  return runtimeName() === "bun";
}

/**
 * Successive read() results of `fd` (opened with O_NONBLOCK), driven by the runtime's poller so
 * that an idle fd holds no thread. Only where {@link hasPollingReader}; the fd stays open.
 */
export function pollingReader(fd: number): ReadableStreamDefaultReader<Uint8Array> {
  if (!hasPollingReader()) throw new Error(`no polling reader on ${runtimeName()}`);
  return g.Bun.file(fd).stream().getReader();
}

export { brokenFds, closeFd, LibcError, sendDatagram, setNonBlocking, takeFd } from "./_libc.ts";
import { libc } from "./_libc.ts";

/**
 * True when this process can call libc through the runtime's FFI: copy file descriptors out of
 * another process ({@link takeFd}), set O_NONBLOCK, and notify systemd ({@link sendDatagram}).
 * Bun and Deno (with `-A`) can; plain Node cannot.
 */
export function hasLibc(): boolean {
  return libc() !== null;
}

/**
 * argv that runs this same program again with `args`: the executable itself when compiled,
 * otherwise the runtime with the entry script this process was started from.
 */
export function selfCommand(args: readonly string[]): string[] {
  if (isCompiledBinary()) return [process.execPath, ...args];
  return scriptCommand(process.argv[1] ?? "", args);
}
