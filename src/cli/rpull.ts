/**
 * `stargz rpull REF`: upstream's `ctr-remote image rpull`. Pulls an image into containerd over
 * its own API so that the stargz snapshotter mounts eStargz layers lazily; `ctr run
 * --snapshotter stargz REF` then starts it. Flags follow `ctr`'s.
 */
import {
  ContainerdClient,
  ContainerdError,
  type PulledLayer,
  PullError,
  pullImage,
} from "../containerd/mod.ts";
import { log } from "../log/mod.ts";
import {
  chainKeychains,
  dockerConfigKeychain,
  loadHostsDir,
  parsePlatform,
  parseReference,
  RegistryClient,
  RegistryError,
  registryOptionsFromConfig,
  staticKeychain,
} from "../registry/mod.ts";
import type { Command } from "./_command.ts";
import { CommandError } from "./_command.ts";
import { configFromFlags } from "./_config.ts";
import { bool, str } from "./_flags.ts";
import { DEFAULT_CONFIG } from "./serve.ts";

/** containerd's default socket (ctr's `--address`). */
const DEFAULT_CONTAINERD_ADDRESS = "/run/containerd/containerd.sock";

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

function progressLine(layer: PulledLayer): string {
  const what = layer.state === "fetched" ? `fetched ${formatBytes(layer.bytes)}` : layer.state;
  return `${layer.digest.slice(0, 19)}  ${what}`;
}

/**
 * The password for `--user USER`, as ctr asks for it: typed on the terminal without echo, or
 * the first line of stdin when that is not a terminal (`echo "$PW" | stargz rpull --user u …`).
 */
async function readPassword(): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) process.stderr.write("Password: ");
  if (stdin.isTTY) stdin.setRawMode(true);
  try {
    return await new Promise<string>((resolve, reject) => {
      let text = "";
      const done = (value: string) => {
        stdin.off("data", onData);
        stdin.off("end", onEnd);
        stdin.pause();
        resolve(value);
      };
      const onData = (chunk: Buffer) => {
        for (const ch of chunk.toString("utf8")) {
          // Ctrl-C in raw mode arrives as a character instead of a signal.
          if (ch === "\u0003") return reject(new CommandError("interrupted", 130));
          if (ch === "\r" || ch === "\n") return done(text);
          if (ch === "\u007f" || ch === "\b") text = text.slice(0, -1);
          else text += ch;
        }
      };
      const onEnd = () => done(text);
      stdin.on("data", onData);
      stdin.once("end", onEnd);
      stdin.resume();
    });
  } finally {
    if (stdin.isTTY) {
      stdin.setRawMode(false);
      process.stderr.write("\n");
    }
  }
}

/** `stargz rpull`. */
export const rpullCommand: Command = {
  name: "rpull",
  summary: "pull an image into containerd with lazily mounted eStargz layers (ctr-remote rpull)",
  usage: "[flags] REF",
  flags: [
    {
      name: "address",
      kind: "string",
      default: process.env.CONTAINERD_ADDRESS ?? DEFAULT_CONTAINERD_ADDRESS,
      help: "containerd's socket ($CONTAINERD_ADDRESS)",
      valueName: "SOCKET",
    },
    {
      name: "namespace",
      kind: "string",
      default: process.env.CONTAINERD_NAMESPACE ?? "default",
      help: "containerd namespace ($CONTAINERD_NAMESPACE)",
      valueName: "NAME",
    },
    {
      name: "snapshotter",
      kind: "string",
      default: "stargz",
      help: "snapshotter to unpack into",
      valueName: "NAME",
    },
    {
      name: "config",
      kind: "string",
      default: DEFAULT_CONFIG,
      help: "daemon configuration whose [resolver] hosts and [blob] settings to use",
      valueName: "FILE",
    },
    { name: "plain-http", kind: "bool", help: "talk to the registry over plain HTTP" },
    {
      name: "hosts-dir",
      kind: "string",
      help: "containerd's registry host directory (instead of the config's [resolver] config_path)",
      valueName: "DIR",
    },
    {
      name: "user",
      kind: "string",
      help: "registry credentials; without :PASSWORD it is asked for (default: the docker config)",
      valueName: "USER[:PASSWORD]",
    },
    {
      name: "platform",
      kind: "string",
      help: "platform to pull from an index (default: this host's)",
      valueName: "PLATFORM",
    },
    {
      name: "use-containerd-labels",
      kind: "bool",
      help: "label layers as containerd's CRI plugin does instead of with the stargz labels",
    },
    {
      name: "skip-content-verify",
      kind: "bool",
      help: "let the snapshotter mount layers without checking their TOC digest",
    },
  ],
  async run(flags) {
    const [refArg, ...extra] = flags.positional;
    if (!refArg || extra.length) throw new CommandError("rpull needs exactly one argument: REF", 2);
    const config = await configFromFlags(flags);
    let ctd: ContainerdClient | undefined;
    try {
      const ref = parseReference(refArg);
      const options = await registryOptionsFromConfig(config, log);
      const hostsDir = str(flags, "hosts-dir");
      if (hostsDir !== undefined) {
        options.hosts = { ...options.hosts, hostsDir: await loadHostsDir(hostsDir) };
      }
      if (bool(flags, "plain-http")) {
        const hosts = options.hosts ?? {};
        const host = { ...hosts.host };
        host[ref.domain] = { ...host[ref.domain], plainHttp: true };
        options.hosts = { ...hosts, host };
      }
      const user = str(flags, "user");
      if (user !== undefined) {
        const colon = user.indexOf(":");
        const creds = colon < 0
          ? { username: user, password: await readPassword() }
          : { username: user.slice(0, colon), password: user.slice(colon + 1) };
        options.keychain = chainKeychains([
          staticKeychain({ [ref.domain]: creds }),
          dockerConfigKeychain(),
        ]);
      }
      const p = str(flags, "platform");
      const registry = new RegistryClient(options);
      ctd = new ContainerdClient({
        address: str(flags, "address") ?? DEFAULT_CONTAINERD_ADDRESS,
        namespace: str(flags, "namespace") ?? "default",
      });
      const tty = process.stdout.isTTY === true;
      let lastDraw = 0;
      const onFetch = (digest: string, bytes: number, total: number) => {
        // Redrawn at most ten times a second, on one line that the settled layer overwrites.
        if (Date.now() - lastDraw < 100 && bytes < total) return;
        lastDraw = Date.now();
        process.stdout.write(
          `\r\x1b[K${digest.slice(0, 19)}  fetching ${formatBytes(bytes)} / ${formatBytes(total)}`,
        );
      };
      const result = await pullImage(ctd, registry, refArg, {
        snapshotter: str(flags, "snapshotter") ?? "stargz",
        ...(p ? { platform: parsePlatform(p) } : {}),
        containerdLabels: bool(flags, "use-containerd-labels"),
        skipContentVerify: bool(flags, "skip-content-verify"),
        ...(tty
          ? { onLayer: (l: PulledLayer) => console.log(`\r\x1b[K${progressLine(l)}`), onFetch }
          : {}),
      });
      if (tty) console.log(`${result.name}  ${result.target.digest}`);
      return 0;
    } catch (err) {
      if (
        err instanceof RegistryError || err instanceof ContainerdError || err instanceof PullError
      ) {
        throw new CommandError(`rpull ${refArg}: ${err.message}`);
      }
      throw err;
    } finally {
      ctd?.close();
    }
  },
};
