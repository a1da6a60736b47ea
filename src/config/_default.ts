/**
 * The default configuration file that install.sh writes to
 * /etc/containerd-stargz-grpc/config.toml and `stargz config default` prints: every key at its
 * default value, each with a short comment. docs/config.md has the full story of each key.
 */

/** The embedded default config file text; parsing it yields `defaultConfig()`. */
export const DEFAULT_CONFIG_TOML: string =
  `# stargz configuration (the containerd-stargz-grpc format, plus [admin], [cache] and
# [prefetch_profile]).
# Every key is shown at its default. Keys marked "(not implemented)" are accepted and ignored,
# with a warning when set to anything else. Reference: docs/config.md.

# Cache for compressed chunks fetched from the registry: "" = on disk. (not implemented: "memory")
http_cache_type = ""
# Seconds before a cached chunk expires; 0 = never. (not implemented)
http_cache_chunk_ttl_sec = 0
# Cache for uncompressed file contents: "" = on disk. (not implemented: "memory")
filesystem_cache_type = ""
# Seconds a resolved layer is kept for reuse by later mounts (0 = 120).
resolve_result_entry_ttl_sec = 120
# Deprecated upstream; ignored.
resolve_result_entry = 0
# Bytes to prefetch when a layer has no prefetch landmark; 0 = none.
prefetch_size = 0
# Seconds a mount waits for prefetch before giving up on it (0 = 10).
prefetch_timeout_sec = 10
# Prefetches larger than this many bytes continue in the background; 0 = always wait.
prefetch_async_size = 0
# Disable prefetch entirely.
noprefetch = false
# Do not fetch the rest of each layer in the background.
no_background_fetch = false
# Debug logging of filesystem operations.
debug = false
# Mount layers that carry no TOC digest, without verifying them.
allow_no_verification = false
# Never verify chunk digests.
disable_verification = false
# Concurrent background fetch tasks (0 = 2).
max_concurrency = 2
# Do not expose filesystem metrics.
no_prometheus = false
# Log the first access to each file. (not implemented)
log_file_access = false
# host:port serving Prometheus /metrics (upstream's metric names); "" = off.
metrics_address = ""
# Unix socket for /debug endpoints; "" = off. (not implemented, see [admin])
debug_address = ""
# Lazy pulling from IPFS. (not implemented)
ipfs = false
# Where layer metadata lives: "memory" or "db". (not implemented: "db")
metadata_store = "memory"

[blob]
# Seconds a layer is trusted without checking the registry connection (0 = 60).
valid_interval = 60
# Check the registry connection on every access (overrides valid_interval).
check_always = false
# Granularity in bytes of on-demand and background fetches (0 = 50000).
chunk_size = 50000
# Timeout in seconds of one fetch from the registry (0 = 300).
fetching_timeout_sec = 300
# Never send multi-range requests; fetch one range covering them all.
force_single_range_mode = false
# Maximum bytes per request while prefetching; 0 = one request.
prefetch_chunk_size = 0
# Retries of a failed registry request (0 = 5).
max_retries = 5
# Minimum wait before a retry, in milliseconds (0 = 30).
min_wait_msec = 30
# Maximum wait before a retry, in milliseconds (0 = 300000).
max_wait_msec = 300000

# Upstream's directory cache. (not implemented: see [cache])
[directory_cache]
max_lru_cache_entry = 10
max_cache_fds = 10
sync_add = false
direct = true
fadv_dontneed = false

[fuse]
# Seconds the kernel caches attributes (0 = 1).
attr_timeout = 1
# Seconds the kernel caches name lookups (0 = 1).
entry_timeout = 1
# FUSE passthrough and its chunk merging. (not implemented)
passthrough = false
merge_buffer_size = 419430400
merge_worker_count = 10

# A separate process that owns the FUSE mounts. (not implemented)
[fuse_manager]
enable = false
address = ""
path = ""

# Registry credentials from the cluster's kubernetes.io/dockerconfigjson secrets (kubeconfig_path
# "" = $KUBECONFIG or ~/.kube/config; a missing file is looked for every 10 s).
[kubeconfig_keychain]
enable_keychain = false
kubeconfig_path = ""

# Registry credentials kubelet sends with CRI PullImage (we proxy the image service; "" =
# /run/containerd/containerd.sock for image_service_path, our own socket for listen_path).
[cri_keychain]
enable_keychain = false
image_service_path = ""
listen_path = ""

# kubelet credential provider plugins: kubelet's CredentialProviderConfig file and the
# directory of its plugins (kubelet's --image-credential-provider-config/-bin-dir); both set = on.
[credential_provider]
config_path = ""
bin_dir = ""

# Registry mirrors, tried in order before the registry itself, e.g.:
#   [[resolver.host."docker.io".mirrors]]
#   host = "mirror.example.com"
#   insecure = false          # plain HTTP instead of HTTPS
#   request_timeout_sec = 0   # 0 = the request_timeout_sec below, negative = no timeout
#   header = { "x-custom" = ["a", "b"] }
[resolver]
# Timeout in seconds of each registry request when a mirror sets none (0 = 30; negative = none).
request_timeout_sec = 30
# containerd's registry host directory (certs.d/<registry>/hosts.toml: mirrors, CAs, client
# certificates, skip_verify), e.g. "/etc/containerd/certs.d"; "" = none.
config_path = ""

[snapshotter]
# Start even when some remote snapshots can no longer reach their registry.
allow_invalid_mounts_on_restart = false

[admin]
# Admin HTTP API (status page, JSON, metrics): "" = admin.sock beside the snapshotter socket
# (/run/containerd-stargz-grpc/admin.sock, mode 0600), "off", a unix socket path, or host:port.
address = ""

[cache]
# Upper bound of the on-disk chunk cache: bytes or a size like "10GiB"; 0 = unbounded.
max_size = 0
# Memory for the hot-chunk cache: bytes or a size like "64MiB".
memory_size = "64MiB"

[prefetch_profile]
# Record which files each layer serves in the first seconds after its first read, and
# prefetch them when the layer is mounted again (after a restart, in another image).
enabled = true
# Seconds after the layer's first read during which reads are recorded.
window_sec = 10
# Most files one profile holds (in the order first read).
max_files = 1000
# Most profiles kept; the oldest are dropped beyond it.
max_profiles = 1000
`;
