import type { Command } from "./_command.ts";
import { configCommand } from "./config.ts";
import { convertCommand } from "./convert.ts";
import { fdHolderCommand } from "./fd_holder.ts";
import { inspectCommand } from "./inspect.ts";
import { installHelperCommand } from "./install_helper.ts";
import { mountCommand } from "./mount.ts";
import { optimizeCommand } from "./optimize.ts";
import { rpullCommand } from "./rpull.ts";
import { serveCommand } from "./serve.ts";
import { statusCommand } from "./status.ts";
import { getTocDigestCommand, tocCommand, verifyCommand } from "./toc.ts";

/** Every `stargz` subcommand, in the order `stargz --help` lists them. Add a row to add one. */
export const COMMANDS: readonly Command[] = [
  serveCommand,
  statusCommand,
  configCommand,
  convertCommand,
  optimizeCommand,
  inspectCommand,
  mountCommand,
  rpullCommand,
  getTocDigestCommand,
  tocCommand,
  verifyCommand,
  installHelperCommand,
  fdHolderCommand,
];
