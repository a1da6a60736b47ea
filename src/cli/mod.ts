/**
 * The `stargz` command line: subcommand dispatch, help, version and exit codes.
 */
import * as fs from "node:fs";
import { log } from "../log/mod.ts";
import { invokedName, runtimeVersion } from "../runtime/mod.ts";
import { RegistryError } from "../registry/mod.ts";
import { KeychainConfigError, RootDirError, SocketPathError } from "../service/mod.ts";
import { CommandError } from "./_command.ts";
import type { Command } from "./_command.ts";
import { COMMANDS } from "./_commands.ts";
import { fdHolderCommand } from "./fd_holder.ts";
import { formatFlags, parseFlags, UsageError } from "./_flags.ts";
import { REVISION, VERSION } from "./_version.ts";
import { DEFAULT_CONFIG, DEFAULT_ROOT } from "./serve.ts";

export type { Command } from "./_command.ts";
export { CommandError } from "./_command.ts";

/** The name under which the binary behaves like the Go daemon. */
export const GO_DAEMON_NAME = "containerd-stargz-grpc";

function topHelp(): string {
  const shown = COMMANDS.filter((c) => !c.hidden);
  const width = Math.max(...shown.map((c) => c.name.length));
  const rows = shown.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n");
  return `stargz ${VERSION}: containerd Stargz Snapshotter (lazy eStargz layers over FUSE)

Usage:
  stargz <command> [flags] [args]
  stargz --version
  ${GO_DAEMON_NAME} [flags]     (a link with this name runs "stargz serve")

Commands:
${rows}

Run "stargz <command> --help" for a command's flags.`;
}

function commandHelp(cmd: Command): string {
  return `Usage: stargz ${cmd.name} ${cmd.usage}\n\n${cmd.summary}\n\nFlags:\n${
    formatFlags(cmd.flags)
  }`;
}

/** The value of `--name X` / `--name=X` (either dash count) in `args`, for `--version`. */
function flagValue(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const m = /^--?([^=]+)(?:=(.*))?$/.exec(args[i]);
    if (m?.[1] === name) return m[2] ?? args[i + 1];
  }
  return undefined;
}

/**
 * The version, then the config file and root a daemon started with the same flags would use
 * (operators asking "which binary, which config?" ask both at once).
 */
function versionText(args: readonly string[]): string {
  const config = flagValue(args, "config") ?? DEFAULT_CONFIG;
  const present = fs.existsSync(config) ? "" : " (absent: defaults)";
  return `stargz ${VERSION} ${REVISION} (${runtimeVersion()})
config ${config}${present}
root   ${flagValue(args, "root") ?? DEFAULT_ROOT}`;
}

/** Runs the command line `args`; resolves to the exit code. Never throws. */
export async function main(args: readonly string[]): Promise<number> {
  let rest = [...args];
  let cmd: Command | undefined;
  // The daemon starts its fd holder with its own executable, which may carry the Go name; the
  // Go daemon takes no positional arguments, so this word cannot mean anything else.
  if (invokedName() === GO_DAEMON_NAME && rest[0] === fdHolderCommand.name) {
    cmd = fdHolderCommand;
    rest = rest.slice(1);
  } else if (invokedName() === GO_DAEMON_NAME) {
    cmd = COMMANDS.find((c) => c.name === "serve");
  } else {
    const first = rest[0];
    if (
      first === undefined || first === "help" || first === "-h" || first === "--help" ||
      first === "-help"
    ) {
      console.log(topHelp());
      return first === undefined ? 2 : 0;
    }
    if (first === "--version" || first === "-version" || first === "version" || first === "-v") {
      console.log(versionText(rest));
      return 0;
    }
    cmd = COMMANDS.find((c) => c.name === first);
    if (!cmd) {
      console.error(`stargz: unknown command "${first}" (run "stargz --help")`);
      return 2;
    }
    rest = rest.slice(1);
  }
  if (!cmd) return 2;
  if (rest.some((a) => a === "-h" || a === "--help" || a === "-help")) {
    console.log(commandHelp(cmd));
    return 0;
  }
  if (rest.some((a) => a === "--version" || a === "-version")) {
    console.log(versionText(rest));
    return 0;
  }
  try {
    const flags = parseFlags(rest, cmd.flags);
    return await cmd.run(flags);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`stargz ${cmd.name}: ${err.message}`);
      return 2;
    }
    if (err instanceof CommandError) {
      log.error(err.message, { command: cmd.name });
      return err.exitCode;
    }
    if (
      err instanceof SocketPathError || err instanceof RootDirError ||
      err instanceof KeychainConfigError || err instanceof RegistryError
    ) {
      log.error(err.message, { command: cmd.name });
      return 1;
    }
    log.error(`unexpected failure: ${(err as Error)?.stack ?? String(err)}`, { command: cmd.name });
    return 1;
  }
}
