/**
 * The valibot schema of the TOML configuration: every key of the Go snapshotter (same names,
 * same effective defaults) plus our own tables `[admin]`, `[cache]` and `[prefetch_profile]`.
 *
 * Upstream decodes into Go structs, so an absent key is the zero value and many consumers then
 * replace a zero by their own default (`if cfg.ChunkSize == 0 { cfg.ChunkSize = 50000 }`).
 * Here an absent key gets the effective default directly, and the keys whose zero upstream
 * reads as "use the default" map an explicit 0 to that default too, so the typed output holds
 * what the daemon really uses.
 */
import * as v from "valibot";

// Messages are the "must be …" part of a wrong-type error; see _errors.ts.
const INTEGER = "an integer";
const BOOLEAN = "a boolean (true or false)";
const STRING = "a string";
const TABLE = "a table";

const UNSIGNED = "a non-negative integer";

/**
 * An integer; negative values are refused unless `signed` (upstream takes them, but a negative
 * size, count or interval only means something for timeouts, where it is "none").
 */
function integer(signed: boolean) {
  return signed
    ? v.pipe(v.number(INTEGER), v.integer(INTEGER))
    : v.pipe(v.number(UNSIGNED), v.integer(UNSIGNED), v.minValue(0, UNSIGNED));
}

function int(def: number, { signed = false } = {}) {
  return v.optional(integer(signed), def);
}

/** An integer where upstream treats 0 as "use the default". */
function intZeroIsDefault(def: number, { signed = false } = {}) {
  return v.optional(
    v.pipe(integer(signed), v.transform((n: number) => (n === 0 ? def : n))),
    def,
  );
}

function bool(def = false) {
  return v.optional(v.boolean(BOOLEAN), def);
}

function str(def = "") {
  return v.optional(v.string(STRING), def);
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
};
const SIZE_RE = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i;
const SIZE = 'a size (bytes as an integer, or a string like "512MiB" or "10GB")';

/** Parses `"10GiB"`, `"512 MB"`, `"4096"` into bytes; undefined when malformed. */
export function parseSize(text: string): number | undefined {
  const m = SIZE_RE.exec(text);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2].toLowerCase()];
  return unit === undefined ? undefined : Math.floor(Number(m[1]) * unit);
}

/** A byte count given as an integer or a string with a unit; the output is bytes. */
function size(def: number | string) {
  return v.optional(
    v.pipe(
      v.union([
        v.pipe(v.number(SIZE), v.integer(SIZE), v.minValue(0, SIZE)),
        v.pipe(v.string(SIZE), v.check((s: string) => parseSize(s) !== undefined, SIZE)),
      ], SIZE),
      v.transform((x: number | string) => (typeof x === "number" ? x : parseSize(x) ?? 0)),
    ),
    def,
  );
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:/\s]*):\d{1,5}$/;

/**
 * `[admin] address`: empty (the default: `admin.sock` beside the snapshotter socket), "off",
 * an absolute unix socket path, or `host:port`.
 */
const ADMIN_ADDRESS =
  'an admin address: "" (admin.sock beside the snapshotter socket), "off", "/path/to.sock" or "host:port"';
const adminAddress = v.optional(
  v.pipe(
    v.string(ADMIN_ADDRESS),
    v.check(
      (s: string) => s === "" || s === "off" || s.startsWith("/") || HOST_PORT.test(s),
      ADMIN_ADDRESS,
    ),
  ),
  "",
);

/** `metrics_address` (upstream's): empty (off) or `host:port` for Prometheus to scrape. */
const METRICS_ADDRESS = 'a metrics address: "" (off) or "host:port"';
const metricsAddress = v.optional(
  v.pipe(
    v.string(METRICS_ADDRESS),
    v.check((s: string) => s === "" || HOST_PORT.test(s), METRICS_ADDRESS),
  ),
  "",
);

function table<const T extends v.ObjectEntries>(entries: T) {
  return v.optional(
    v.strictObject(entries, TABLE),
    {} as v.InferInput<v.StrictObjectSchema<T, string>>,
  );
}

const HEADER_VALUE = "a string or an array of strings";

/** One `[[resolver.host."<registry>".mirrors]]` entry (service/resolver.MirrorConfig). */
export const MirrorSchema = v.strictObject({
  host: v.pipe(v.string(STRING), v.minLength(1, "a non-empty host name")),
  insecure: bool(),
  // 0 means [resolver] request_timeout_sec (upstream: a fixed 30 s); negative means no timeout.
  request_timeout_sec: int(0, { signed: true }),
  header: v.optional(
    v.record(
      v.string(),
      v.union(
        [v.string(HEADER_VALUE), v.array(v.string(HEADER_VALUE), HEADER_VALUE)],
        HEADER_VALUE,
      ),
      TABLE,
    ),
    {},
  ),
}, TABLE);

/** The whole configuration file. */
export const ConfigSchema = v.strictObject({
  // fs/config.Config
  http_cache_type: str(),
  http_cache_chunk_ttl_sec: int(0, { signed: true }),
  filesystem_cache_type: str(),
  resolve_result_entry_ttl_sec: intZeroIsDefault(120),
  resolve_result_entry: int(0),
  prefetch_size: int(0),
  prefetch_timeout_sec: intZeroIsDefault(10),
  prefetch_async_size: int(0),
  noprefetch: bool(),
  no_background_fetch: bool(),
  debug: bool(),
  allow_no_verification: bool(),
  disable_verification: bool(),
  max_concurrency: intZeroIsDefault(2),
  no_prometheus: bool(),
  log_file_access: bool(),
  // cmd/containerd-stargz-grpc snapshotterConfig
  metrics_address: metricsAddress,
  debug_address: str(),
  ipfs: bool(),
  metadata_store: v.optional(v.picklist(["memory", "db"], 'one of "memory" or "db"'), "memory"),
  blob: table({
    valid_interval: intZeroIsDefault(60),
    check_always: bool(),
    chunk_size: intZeroIsDefault(50000),
    fetching_timeout_sec: intZeroIsDefault(300),
    force_single_range_mode: bool(),
    prefetch_chunk_size: int(0),
    max_retries: intZeroIsDefault(5),
    min_wait_msec: intZeroIsDefault(30),
    max_wait_msec: intZeroIsDefault(300000),
  }),
  directory_cache: table({
    max_lru_cache_entry: intZeroIsDefault(10),
    max_cache_fds: intZeroIsDefault(10),
    sync_add: bool(),
    // Upstream's `default:"true"` tag, honoured by the go-toml decoder the daemon uses.
    direct: bool(true),
    fadv_dontneed: bool(),
  }),
  fuse: table({
    attr_timeout: intZeroIsDefault(1),
    entry_timeout: intZeroIsDefault(1),
    passthrough: bool(),
    merge_buffer_size: int(419430400),
    merge_worker_count: int(10),
  }),
  fuse_manager: table({
    enable: bool(),
    address: str(),
    path: str(),
  }),
  // service.Config
  kubeconfig_keychain: table({
    enable_keychain: bool(),
    kubeconfig_path: str(),
  }),
  cri_keychain: table({
    enable_keychain: bool(),
    image_service_path: str(),
    listen_path: str(),
  }),
  // Ours: kubelet credential provider plugins (both keys set = enabled).
  credential_provider: table({
    config_path: str(),
    bin_dir: str(),
  }),
  resolver: table({
    // Ours: the timeout of registries and mirrors that set none (upstream hard-codes 30 s).
    request_timeout_sec: intZeroIsDefault(30, { signed: true }),
    // Ours: containerd's registry host directory (certs.d/<registry>/hosts.toml), as its CRI
    // plugin's `[plugins."io.containerd.grpc.v1.cri".registry] config_path` names it.
    config_path: str(),
    host: v.optional(
      v.record(
        v.string(),
        v.strictObject(
          { mirrors: v.optional(v.array(MirrorSchema, "an array of tables"), []) },
          TABLE,
        ),
        TABLE,
      ),
      {},
    ),
  }),
  snapshotter: table({
    allow_invalid_mounts_on_restart: bool(),
  }),
  // Ours.
  admin: table({
    address: adminAddress,
  }),
  cache: table({
    max_size: size(0),
    memory_size: size("64MiB"),
  }),
  prefetch_profile: table({
    enabled: bool(true),
    window_sec: int(10),
    max_files: int(1000),
    max_profiles: int(1000),
  }),
}, TABLE);
