/** Entry point of the `stargz` executable. */
import { main } from "./cli/mod.ts";
import { programArgs } from "./runtime/mod.ts";

process.exitCode = await main(programArgs());
// Open handles (sockets, timers) must not keep a finished command alive.
process.exit(process.exitCode);
