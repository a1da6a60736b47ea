/**
 * The registry client: references, hosts and mirrors, authentication and keychains, manifests,
 * lazy blob range reads and pushes. It knows HTTP and the OCI distribution spec, nothing about
 * FUSE or snapshots.
 */
export {
  formatReference,
  parseReference,
  type Reference,
  referenceName,
  withObject,
} from "./reference.ts";
export {
  type Digest,
  type DigestAlgorithm,
  digestAlgorithm,
  digestHex,
  DigestSchema,
  isDigest,
  parseDigest,
} from "./digest.ts";
export {
  DEFAULT_REQUEST_TIMEOUT_SEC,
  type HostCapabilities,
  type HostsFile,
  isLocalhost,
  type MirrorConfig,
  type RegistryHost,
  registryHosts,
  type RegistryHostsConfig,
} from "./hosts.ts";
export { type AuthChallenge, parseWwwAuthenticate } from "./auth.ts";
export {
  authKeyFor,
  chainKeychains,
  type Credentials,
  dockerConfigKeychain,
  type DockerConfigKeychainOptions,
  type Keychain,
  runCredentialHelper,
  staticKeychain,
} from "./keychain.ts";
export { CriAuthConfig, CriKeychain, imageKey } from "./cri_keychain.ts";
export {
  DOCKER_CONFIG_SECRET_TYPE,
  KUBECONFIG_POLL_MS,
  type KubeconfigKeychain,
  kubeconfigKeychain,
  type KubeconfigKeychainOptions,
} from "./kubeconfig_keychain.ts";
export {
  CREDENTIAL_PROVIDER_API,
  CredentialProviderError,
  type CredentialProviderKeychain,
  credentialProviderKeychain,
  type CredentialProviderOptions,
  matchImage,
} from "./credential_provider.ts";
export {
  type Descriptor,
  type FetchedManifest,
  formatPlatform,
  hostPlatform,
  type ImageConfig,
  type Index,
  type Manifest,
  MediaType,
  parsePlatform,
  type Platform,
  platformMatches,
  sha256Digest,
  verifyDigest,
} from "./manifest.ts";
export {
  type BlobOptions,
  type ByteRange,
  DEFAULT_BLOB_OPTIONS,
  type RemoteBlob,
  type ResolvedBlobOptions,
} from "./blob.ts";
export {
  type PushBlobOptions,
  RegistryClient,
  type RegistryClientOptions,
  type ResolvedImage,
} from "./client.ts";
export {
  DigestMismatchError,
  InvalidDigestError,
  InvalidReferenceError,
  NotFoundError,
  RegistryError,
  TimeoutError,
  UnauthorizedError,
} from "./errors.ts";
export { registryOptionsFromConfig } from "./config.ts";
export { HostsDirError, loadHostsDir, parseHostsToml } from "./_hosts_dir.ts";
