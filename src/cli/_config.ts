import { type Config, ConfigError, loadConfig } from "../config/mod.ts";
import { CommandError } from "./_command.ts";
import { type ParsedFlags, str } from "./_flags.ts";
import { DEFAULT_CONFIG } from "./serve.ts";

/**
 * The daemon configuration a command's `--config` names (the daemon's default file when not
 * given, and then a missing file is no error); a bad file ends the command with its message.
 */
export async function configFromFlags(flags: ParsedFlags): Promise<Config> {
  try {
    const file = str(flags, "config") ?? DEFAULT_CONFIG;
    return (await loadConfig(file, { explicit: flags.given.has("config") })).config;
  } catch (err) {
    if (err instanceof ConfigError) throw new CommandError(err.message);
    throw err;
  }
}
