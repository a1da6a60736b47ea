import * as fs from "node:fs/promises";
import {
  addStargz,
  ContainerdConfigError,
  type EditResult,
  removeStargz,
} from "./_containerd_config.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { str, UsageError } from "./_flags.ts";
import { DEFAULT_ADDRESS } from "./serve.ts";

async function readOrEmpty(file: string): Promise<string> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw err;
  }
}

/**
 * `stargz install-helper containerd-config add|remove --file F`: the TOML edit install.sh needs
 * (a shell script cannot edit TOML safely). Prints `changed` or `unchanged`, so the script
 * restarts containerd only when its config really changed. The first change of an existing
 * file keeps the original beside it as `F.before-stargz` (the rewrite drops comments).
 * Hidden from `stargz --help`: it is the installer's, not an operator's, command.
 */
export const installHelperCommand: Command = {
  name: "install-helper",
  summary: "edits for install.sh (containerd-config add|remove)",
  usage: "containerd-config add|remove --file FILE [--address SOCKET] [--kubernetes]",
  hidden: true,
  flags: [
    { name: "file", kind: "string", help: "containerd's config.toml", valueName: "FILE" },
    {
      name: "address",
      kind: "string",
      default: DEFAULT_ADDRESS,
      help: "the snapshotter socket to register",
      valueName: "SOCKET",
    },
    { name: "kubernetes", kind: "bool", default: false, help: "also set the CRI snapshotter" },
    {
      name: "new-version",
      kind: "int",
      default: 2,
      help: "config version of a new file (2: containerd 1.x, 3: containerd 2.x)",
      valueName: "N",
    },
  ],
  async run(flags) {
    const [what, action, ...extra] = flags.positional;
    if (what !== "containerd-config" || (action !== "add" && action !== "remove")) {
      throw new UsageError("want: containerd-config add|remove --file FILE");
    }
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    const file = str(flags, "file");
    if (!file) throw new UsageError("missing --file");
    const newVersion = flags.values["new-version"];
    if (newVersion !== 2 && newVersion !== 3) throw new UsageError("--new-version must be 2 or 3");
    const before = await readOrEmpty(file);
    let result: EditResult;
    try {
      result = action === "add"
        ? addStargz(before, {
          address: str(flags, "address") ?? DEFAULT_ADDRESS,
          kubernetes: flags.values.kubernetes === true,
          newFileVersion: newVersion,
        })
        : removeStargz(before);
    } catch (err) {
      if (err instanceof ContainerdConfigError) throw new CommandError(`${file}: ${err.message}`);
      throw err;
    }
    if (result.changed) {
      if (before.trim() !== "") {
        await fs.writeFile(`${file}.before-stargz`, before, { flag: "wx" }).catch((err) => {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        });
      }
      await fs.writeFile(`${file}.tmp`, result.text);
      await fs.rename(`${file}.tmp`, file);
    }
    process.stdout.write(result.changed ? "changed\n" : "unchanged\n");
    return 0;
  },
};
