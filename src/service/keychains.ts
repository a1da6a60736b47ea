/**
 * The daemon's keychains from its configuration, in the order they are asked (the first with
 * credentials for an image wins; see docs/private-registries.md):
 *
 *   1. `cri`: what kubelet sent with the PullImage of this very image (`[cri_keychain]`);
 *   2. `credential-provider`: kubelet credential provider plugins (`[credential_provider]`);
 *   3. `kubeconfig`: `kubernetes.io/dockerconfigjson` secrets (`[kubeconfig_keychain]`);
 *   4. `docker-config`: `~/.docker/config.json` and credential helpers (always).
 *
 * The most specific source goes first: kubelet's credentials are the ones the pod was admitted
 * with, and the docker config of the node is the catch-all.
 */
import * as path from "node:path";
import type { Config } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  chainKeychains,
  credentialProviderKeychain,
  CriKeychain,
  dockerConfigKeychain,
  type Keychain,
  type KubeconfigKeychain,
  kubeconfigKeychain,
} from "../registry/mod.ts";

/** A keychain cannot be set up (unreadable credential provider config, credentials file, …). */
export class KeychainConfigError extends Error {
  override name = "KeychainConfigError";
}

/** File under the daemon root holding the CRI keychain's credentials (0600). */
export const CRI_CREDENTIALS_FILE = "cri-credentials.json";

/** The keychains of a daemon. */
export interface DaemonKeychains {
  /** All of them chained, for the registry client. */
  readonly keychain: Keychain;
  /** Their names in the order they are asked. */
  readonly names: readonly string[];
  /** The CRI keychain, when `[cri_keychain] enable_keychain`. */
  readonly cri?: CriKeychain;
  /** Stops the kubeconfig keychain's list and watch. */
  close(): Promise<void>;
}

/** Opens the keychains `config` enables; the CRI keychain keeps its file under `root`. */
export async function openKeychains(
  config: Config,
  root: string,
  log: Logger,
): Promise<DaemonKeychains> {
  const chain: Keychain[] = [];
  let cri: CriKeychain | undefined;
  if (config.cri_keychain.enable_keychain) {
    const file = path.join(root, CRI_CREDENTIALS_FILE);
    cri = await CriKeychain.open(file).catch((err: Error) => {
      throw new KeychainConfigError(`cri keychain: ${err.message}`);
    });
    chain.push(cri);
  }
  const providers = config.credential_provider;
  if (providers.config_path && providers.bin_dir) {
    chain.push(
      await credentialProviderKeychain({
        configPath: providers.config_path,
        binDir: providers.bin_dir,
      }).catch((err: Error) => {
        throw new KeychainConfigError(err.message);
      }),
    );
  } else if (providers.config_path || providers.bin_dir) {
    log.warn("credential providers need both [credential_provider] config_path and bin_dir");
  }
  let kube: KubeconfigKeychain | undefined;
  if (config.kubeconfig_keychain.enable_keychain) {
    // Lists and watches in the background; a missing kubeconfig is waited for, not an error.
    kube = kubeconfigKeychain({ kubeconfigPath: config.kubeconfig_keychain.kubeconfig_path, log });
    chain.push(kube);
  }
  chain.push(dockerConfigKeychain());
  const keychain = chainKeychains(
    chain,
    (name, err) =>
      log.warn("keychain failed; trying the next one", {
        keychain: name,
        error: err instanceof Error ? err.message : String(err),
      }),
  );
  return {
    keychain,
    names: keychain.names,
    cri,
    close: () => {
      kube?.close();
      return Promise.resolve();
    },
  };
}
