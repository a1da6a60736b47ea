import type { Command } from "./_command.ts";
import { configCommand } from "./config.ts";
import { serveCommand } from "./serve.ts";

/** Every `stargz` subcommand, in the order `stargz --help` lists them. Add a row to add one. */
export const COMMANDS: readonly Command[] = [
  serveCommand,
  configCommand,
];
