import type { Command } from "./_command.ts";
import { configCommand } from "./config.ts";
import { convertCommand } from "./convert.ts";
import { fdHolderCommand } from "./fd_holder.ts";
import { inspectCommand } from "./inspect.ts";
import { mountCommand } from "./mount.ts";
import { serveCommand } from "./serve.ts";
import { getTocDigestCommand, tocCommand, verifyCommand } from "./toc.ts";

/** Every `stargz` subcommand, in the order `stargz --help` lists them. Add a row to add one. */
export const COMMANDS: readonly Command[] = [
  serveCommand,
  configCommand,
  convertCommand,
  inspectCommand,
  mountCommand,
  getTocDigestCommand,
  tocCommand,
  verifyCommand,
  fdHolderCommand,
];
