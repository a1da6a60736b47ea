/**
 * Process-wide Prometheus metrics, a bottom module like `log/` so that `fs/`, `fuse/` and
 * `registry/` can count without knowing who serves the numbers (`service/` renders them on
 * `metrics_address` and the admin API's `/metrics`).
 *
 * The `stargz_fs_*` families keep the Go snapshotter's names, types, labels and buckets
 * (fs/metrics/common/metrics.go: namespace `stargz`, subsystem `fs`; labels `operation_type` and
 * `layer`), so a Prometheus and the dashboards set up for the Go daemon keep working after the
 * switch. The others are ours.
 */

/** Label values by label name. */
export type Labels = Readonly<Record<string, string>>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** `{a="x",b="y"}`, or "" without labels; `names` fixes the order. */
function labelText(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return "";
  return `{${names.map((n, i) => `${n}="${escapeLabel(values[i] ?? "")}"`).join(",")}}`;
}

function formatValue(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isNaN(v) ? "NaN" : String(v);
}

/** One metric family: a name, help, type and the label names of its series. */
abstract class Family {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {}
  abstract readonly type: "counter" | "gauge" | "histogram";
  /** The sample lines of this family (without HELP/TYPE). */
  abstract samples(): string[];

  protected key(labels: Labels): string {
    return JSON.stringify(this.labelNames.map((n) => labels[n] ?? ""));
  }
}

/** A counter or gauge: one number per label set. */
class Scalar extends Family {
  readonly #values = new Map<string, number>();
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly type: "counter" | "gauge",
  ) {
    super(name, help, labelNames);
  }
  /** Adds `n` (1 by default) to the series of `labels`. */
  add(labels: Labels = {}, n = 1): void {
    const k = this.key(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + n);
  }
  /** Sets the series of `labels` (gauges). */
  set(labels: Labels, v: number): void {
    this.#values.set(this.key(labels), v);
  }
  /** Forgets every series (families recomputed at each scrape). */
  reset(): void {
    this.#values.clear();
  }
  samples(): string[] {
    return [...this.#values].map(([k, v]) =>
      `${this.name}${labelText(this.labelNames, JSON.parse(k))} ${formatValue(v)}`
    );
  }
}

/** A histogram with fixed upper bounds, as Prometheus' client libraries export it. */
class Histogram extends Family {
  readonly type = "histogram";
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly buckets: number[],
  ) {
    super(name, help, labelNames);
  }
  /** Records one observation `v` for `labels`. */
  observe(labels: Labels, v: number): void {
    const k = this.key(labels);
    const s = this.#series.get(k) ?? { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
    this.#series.set(k, s);
    this.buckets.forEach((b, i) => {
      if (v <= b) s.counts[i]++;
    });
    s.sum += v;
    s.count++;
  }
  samples(): string[] {
    const out: string[] = [];
    for (const [k, s] of this.#series) {
      const values: string[] = JSON.parse(k);
      const names = [...this.labelNames, "le"];
      this.buckets.forEach((b, i) => {
        out.push(
          `${this.name}_bucket${labelText(names, [...values, formatValue(b)])} ${s.counts[i]}`,
        );
      });
      out.push(`${this.name}_bucket${labelText(names, [...values, "+Inf"])} ${s.count}`);
      out.push(`${this.name}_sum${labelText(this.labelNames, values)} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${labelText(this.labelNames, values)} ${s.count}`);
    }
    return out;
  }
}

const OP = ["operation_type", "layer"] as const;
// Upstream's buckets (latencyBucketsMilliseconds / latencyBucketsMicroseconds).
const MS_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];
const US_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Upstream's `operation_type` values that this daemon records. */
export const Operation = {
  mount: "mount",
  nodeReaddir: "node_readdir",
  prefetchesCompleted: "all_prefetches_completed",
  remoteRegistryGet: "remote_registry_get",
  readOnDemand: "read_on_demand",
  onDemandReadAccessCount: "on_demand_read_access_count",
  onDemandRemoteRegistryFetchCount: "on_demand_remote_registry_fetch_count",
  onDemandBytesServed: "on_demand_bytes_served",
  onDemandBytesFetched: "on_demand_bytes_fetched",
} as const;

/** Every metric family the daemon exports, in the order `/metrics` prints them. */
export const METRICS = {
  // Upstream (fs/metrics/common): same names, types and labels.
  operationDurationMs: new Histogram(
    "stargz_fs_operation_duration_milliseconds",
    "Latency in milliseconds of stargz snapshotter operations. Broken down by operation type and layer sha.",
    OP,
    MS_BUCKETS,
  ),
  operationDurationUs: new Histogram(
    "stargz_fs_operation_duration_microseconds",
    "Latency in microseconds of stargz snapshotter operations. Broken down by operation type and layer sha.",
    OP,
    US_BUCKETS,
  ),
  operationCount: new Scalar(
    "stargz_fs_operation_count",
    "The count of stargz snapshotter operations. Broken down by operation type and layer sha.",
    OP,
    "counter",
  ),
  bytesServed: new Scalar(
    "stargz_fs_bytes_served",
    "The number of bytes served per stargz snapshotter operations. Broken down by operation type and layer sha.",
    OP,
    "gauge",
  ),
  // Upstream (fs/metrics/layer, go-metrics namespace stargz_fs, unit bytes): set at each scrape.
  layerFetchedSize: new Scalar(
    "stargz_fs_layer_fetched_size_bytes",
    "Total fetched size of the layer",
    ["digest", "mountpoint"],
    "counter",
  ),
  layerPrefetchSize: new Scalar(
    "stargz_fs_layer_prefetch_size_bytes",
    "Total prefetched size of the layer",
    ["digest", "mountpoint"],
    "counter",
  ),
  layerSize: new Scalar(
    "stargz_fs_layer_size_bytes",
    "Total size of the layer",
    ["digest", "mountpoint"],
    "counter",
  ),
  // Ours.
  fallbacks: new Scalar(
    "stargz_fallback_total",
    "Layers that fell back to a full pull instead of a lazy mount, by reason.",
    ["reason"],
    "counter",
  ),
  layerFetchedBytes: new Scalar(
    "stargz_layer_fetched_bytes",
    "Compressed bytes of each mounted layer fetched so far (set at each scrape).",
    ["digest"],
    "gauge",
  ),
  layerErrors: new Scalar(
    "stargz_layer_errors",
    "1 when the layer's state file reports an error (set at each scrape).",
    ["digest"],
    "gauge",
  ),
  cacheBytes: new Scalar(
    "stargz_cache_bytes",
    "Bytes held by the chunk cache (set at each scrape).",
    ["tier"],
    "gauge",
  ),
  cacheEvictions: new Scalar(
    "stargz_cache_evictions_total",
    "Chunks evicted from the disk cache to stay under [cache] max_size.",
    [],
    "counter",
  ),
  cacheLookups: new Scalar(
    "stargz_cache_lookups_total",
    "Chunk cache lookups by result (memory, disk, miss).",
    ["result"],
    "counter",
  ),
  registryRequests: new Scalar(
    "stargz_registry_requests_total",
    "HTTP requests to registries by host and status code (0: no response).",
    ["host", "code"],
    "counter",
  ),
  registryRequestDuration: new Histogram(
    "stargz_registry_request_duration_seconds",
    "Time to the response headers of registry requests, by host.",
    ["host"],
    SECONDS_BUCKETS,
  ),
  registryErrors: new Scalar(
    "stargz_registry_request_errors_total",
    "Registry requests without an answer (connection error, timeout) or answered 429 or 5xx, by host.",
    ["host"],
    "counter",
  ),
  restoreFailures: new Scalar(
    "stargz_restore_failed",
    "Remote snapshots that could not be mounted again after a restart (set at each scrape).",
    [],
    "gauge",
  ),
  layersMounted: new Scalar(
    "stargz_layers_mounted",
    "Layers mounted through FUSE (set at each scrape).",
    [],
    "gauge",
  ),
  fuseInFlight: new Scalar(
    "stargz_fuse_requests_in_flight",
    "FUSE requests being answered asynchronously right now.",
    [],
    "gauge",
  ),
} as const;

/** The `layer` label of operations upstream records for no layer: sha256 of "". */
export const NO_LAYER = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Records how long `operation` took on `layer` since `startMs` (`performance.now()`). */
export function observeMs(operation: string, layer: string, startMs: number): void {
  METRICS.operationDurationMs.observe(
    { operation_type: operation, layer },
    performance.now() - startMs,
  );
}

/** Like {@link observeMs}, in microseconds (upstream's unit for per-read operations). */
export function observeUs(operation: string, layer: string, startMs: number): void {
  METRICS.operationDurationUs.observe(
    { operation_type: operation, layer },
    (performance.now() - startMs) * 1000,
  );
}

/** Every family in Prometheus text exposition format 0.0.4. */
export function renderMetrics(): string {
  const lines: string[] = [];
  for (const f of Object.values(METRICS)) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...f.samples());
  }
  return lines.join("\n") + "\n";
}
