import { runHolder } from "../fdstore/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { str } from "./_flags.ts";

/**
 * `stargz fd-holder`: the process `serve` starts to keep its FUSE connections alive across
 * restarts (see docs/operations.md); not meant to be run by hand.
 */
export const fdHolderCommand: Command = {
  name: "fd-holder",
  summary: "keep the daemon's FUSE connections across its restarts (started by serve)",
  usage: "--socket SOCKET",
  flags: [
    {
      name: "socket",
      kind: "string",
      help: "unix socket the daemon talks to",
      valueName: "SOCKET",
    },
  ],
  run(flags) {
    const socket = str(flags, "socket");
    if (!socket) throw new CommandError("--socket is required", 2);
    return runHolder(socket);
  },
};
