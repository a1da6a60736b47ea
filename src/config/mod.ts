/**
 * Configuration (placeholder until the schema lands): the public face other modules rely on.
 */

/** The daemon's configuration. */
// deno-lint-ignore no-explicit-any
export type Config = Record<string, any>;

/** A configuration file that cannot be used; the message names the culprit. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The result of loading a configuration file. */
export interface LoadedConfig {
  config: Config;
  /** One line per accepted-but-unimplemented key. */
  warnings: string[];
}

/** Loads the TOML file at `path`; a missing file is fine unless `explicit`. */
export async function loadConfig(path: string, opts: { explicit: boolean }): Promise<LoadedConfig> {
  await Promise.resolve();
  void path;
  void opts;
  return { config: {}, warnings: [] };
}
