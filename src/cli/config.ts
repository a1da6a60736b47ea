import { ConfigError, DEFAULT_CONFIG_TOML, loadConfig } from "../config/mod.ts";
import type { Command } from "./_command.ts";
import { UsageError } from "./_flags.ts";
import { str } from "./_flags.ts";
import { DEFAULT_CONFIG } from "./serve.ts";

const ACTIONS = ["default", "show", "check"] as const;

/**
 * `stargz config default|show|check`: print the default file, print the effective
 * configuration as JSON, or validate a file. Problems are plain one-line messages on stderr
 * (not JSON log lines), since a person reads them.
 */
export const configCommand: Command = {
  name: "config",
  summary: "print the default config file, show the effective config, or check a config file",
  usage: "default | show [--config FILE] | check [--config FILE]",
  flags: [
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "path to the configuration file (show, check)",
      valueName: "FILE",
    },
  ],
  async run(flags) {
    const [action, ...extra] = flags.positional;
    if (!(ACTIONS as readonly string[]).includes(action ?? "")) {
      throw new UsageError(
        action === undefined
          ? "missing action: default, show or check"
          : `unknown action "${action}" (want default, show or check)`,
      );
    }
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    if (action === "default") {
      process.stdout.write(DEFAULT_CONFIG_TOML);
      return 0;
    }
    const path = str(flags, "config") ?? DEFAULT_CONFIG;
    try {
      const loaded = await loadConfig(path, { explicit: flags.given.has("config") });
      for (const w of loaded.warnings) process.stderr.write(`warning: ${w}\n`);
      if (action === "show") process.stdout.write(JSON.stringify(loaded.config, null, 2) + "\n");
      else process.stdout.write(`${path}: ok\n`);
      return 0;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`stargz config: ${err.message}\n`);
      return 1;
    }
  },
};
