import type { FlagSpec, ParsedFlags } from "./_flags.ts";

/** One `stargz <name>` subcommand. */
export interface Command {
  name: string;
  /** One line for `stargz --help`. */
  summary: string;
  /** Usage line after `stargz <name>`, e.g. `[flags] SOURCE MOUNTPOINT`. */
  usage: string;
  flags: FlagSpec[];
  /** Left out of `stargz --help` (commands for scripts, not people). */
  hidden?: boolean;
  /** Runs the command; resolves to the process exit code. */
  run(flags: ParsedFlags): Promise<number>;
}

/** A failure that should end the command with a one-line message and this exit code. */
export class CommandError extends Error {
  override name = "CommandError";
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}
