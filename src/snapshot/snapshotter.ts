/**
 * containerd's overlayfs snapshotter semantics plus remote snapshots: a Prepare that names a
 * target and its source may be satisfied by mounting the layer through a {@link FileSystem}
 * instead of letting containerd unpack it.
 *
 * On disk, as containerd's overlay snapshotter: `<root>/metadata.db` and
 * `<root>/snapshots/<id>/{fs,work}`. Short numeric ids keep a 128-layer `lowerdir` short enough
 * for containerd to fit it into one page after making the paths relative.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { Logger } from "../log/mod.ts";
import { METRICS } from "../metrics/mod.ts";
import { AlreadyExistsError, InvalidArgumentError, UnavailableError } from "./errors.ts";
import { type FieldLookup, parseFilters } from "./filter.ts";
import { mountPointsUnder, unmount } from "./_mounts.ts";
import { MetaStore, type StoredSnapshot, type StoreTx } from "./_store.ts";
import { diskUsage } from "./_usage.ts";
import {
  InvalidLabelError,
  REMOTE_LABEL,
  REMOTE_LABEL_VALUE,
  REMOTE_SNAPSHOT_LOG_KEY,
  type RemoteSource,
  remoteSource,
  TARGET_SNAPSHOT_LABEL,
} from "../labels/mod.ts";
import type { FileSystem } from "./remote.ts";
import type { Mount, SnapshotInfo, Usage } from "./types.ts";

/** Named points between the steps of Prepare, Commit and Remove (for crash tests). */
export type SnapshotStep =
  | "prepare:dir-created"
  | "prepare:row-inserted"
  | "prepare:dir-renamed"
  | "commit:usage-measured"
  | "remove:row-deleted"
  | "remove:committed";

/** How to open a {@link Snapshotter}. */
export interface SnapshotterOptions {
  /** Directory holding `metadata.db` and `snapshots/`. */
  root: string;
  log: Logger;
  /** Mounts remote layers; without one every Prepare is an ordinary snapshot. */
  fileSystem?: FileSystem;
  /** Defer removing directories to {@link Snapshotter.cleanup} (default true, as upstream). */
  asyncRemove?: boolean;
  /** Mount the remote snapshots found in the store again on start (default true). */
  restore?: boolean;
  /**
   * Keep serving when a remote snapshot cannot be mounted again on start: the snapshot stays,
   * answers Unavailable, and can be removed. Without it such a failure is fatal.
   */
  allowInvalidMountsOnRestart?: boolean;
  /** Test hook called between the steps of Prepare, Commit and Remove. */
  onStep?: (step: SnapshotStep) => void | Promise<void>;
}

/** A remote snapshot that could not be mounted again on start. */
export interface RestoreFailure {
  name: string;
  mountpoint: string;
  error: string;
}

/** A layer that was to be mounted remotely but fell back to an ordinary (full pull) snapshot. */
export interface Fallback {
  /** The snapshot name containerd would have committed (`containerd.io/snapshot.ref`). */
  target: string;
  /** The image and layer from the source labels, when there were any. */
  ref?: string;
  digest?: string;
  /** Why, as logged: the error message of the failed mount. */
  reason: string;
  /** The reason's kind, a bounded set fit for a metric label: the error's class name. */
  kind: string;
  /** When (ms since the epoch). */
  time: number;
}

/** How many fallbacks {@link Snapshotter.fallbacks} remembers (most recent kept). */
const FALLBACKS_KEPT = 200;

/** Outcome of restoring the remote snapshots on start. */
export interface RestoreReport {
  restored: string[];
  failed: RestoreFailure[];
}

/** Longest label key plus value containerd accepts. */
const MAX_LABEL_SIZE = 4096;
/** How many remote layers are mounted again at once on start. */
const RESTORE_PARALLELISM = 8;

function validateLabels(labels: Record<string, string>): void {
  for (const [k, v] of Object.entries(labels)) {
    if (k.length + v.length > MAX_LABEL_SIZE) {
      throw new InvalidArgumentError(
        `label key and value greater than maximum size (${MAX_LABEL_SIZE} bytes), key: ${
          k.slice(0, 10)
        }`,
      );
    }
  }
}

/**
 * Why the labels cannot make a remote snapshot (none name a source, or one we would act on does
 * not parse), or undefined when they can. A refusal falls back to unpacking the layer.
 */
/** The layer's remote source, or why the labels name none (a reason and a metric label). */
function parseSource(
  labels: Record<string, string>,
): { source: RemoteSource } | { reason: string; kind: string } {
  try {
    const source = remoteSource(labels);
    if (source) return { source };
    return {
      reason: "no source labels (image reference and layer digest)",
      kind: "NoSourceLabels",
    };
  } catch (err) {
    if (err instanceof InvalidLabelError) return { reason: err.message, kind: "InvalidLabel" };
    throw err;
  }
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException)?.code ?? "");
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Filter adaptor for snapshot infos: `kind`, `name`, `parent`, `labels.<key>`. */
function lookupInfo(info: SnapshotInfo): FieldLookup {
  return (fieldpath) => {
    switch (fieldpath[0]) {
      case "kind":
        return info.kind;
      case "name":
        return info.name;
      case "parent":
        return info.parent;
      case "labels":
        return info.labels[fieldpath.slice(1).join(".")];
    }
    return undefined;
  };
}

async function supportsIndexOption(): Promise<boolean> {
  try {
    await fs.stat("/sys/module/overlay/parameters/index");
    return true;
  } catch {
    return false;
  }
}

/** The snapshotter behind the snapshots.v1 service. */
export class Snapshotter {
  private restoreTask: Promise<RestoreReport> = Promise.resolve({ restored: [], failed: [] });
  private readonly restoring = new Map<string, Promise<void>>();
  private readonly invalid = new Map<string, string>();
  readonly #fallbacks: Fallback[] = [];
  private readonly snapshotsDir: string;
  private readonly fileSystem: FileSystem | undefined;
  private readonly log: Logger;
  private readonly asyncRemove: boolean;
  private closed = false;

  private constructor(
    private readonly opts: SnapshotterOptions,
    private readonly store: MetaStore,
    private readonly indexOff: boolean,
  ) {
    this.snapshotsDir = path.join(opts.root, "snapshots");
    this.fileSystem = opts.fileSystem;
    this.log = opts.log;
    this.asyncRemove = opts.asyncRemove ?? true;
  }

  /**
   * Settles when every remote snapshot found on start was mounted again or failed; rejects with
   * a {@link RestoreError} on failures unless `allowInvalidMountsOnRestart`.
   */
  get restored(): Promise<RestoreReport> {
    return this.restoreTask;
  }

  /**
   * Opens the store under `opts.root`, releases mounts left by a previous process, removes
   * directories no snapshot owns, and starts mounting remote snapshots again in the background.
   */
  static async open(opts: SnapshotterOptions): Promise<Snapshotter> {
    await fs.mkdir(opts.root, { recursive: true, mode: 0o700 });
    await fs.mkdir(path.join(opts.root, "snapshots"), { recursive: true, mode: 0o700 });
    const store = MetaStore.open(path.join(opts.root, "metadata.db"));
    const s = new Snapshotter(opts, store, await supportsIndexOption());
    try {
      await s.releaseStaleMounts();
      await s.cleanup();
    } catch (err) {
      await store.close();
      throw err;
    }
    s.restoreTask = s.restoreRemoteSnapshots();
    // Callers observe the outcome through `restored`; keep an unobserved failure from
    // becoming an unhandled rejection.
    s.restoreTask.catch(() => {});
    return s;
  }

  /** The most recent layers that fell back to a full pull, oldest first. */
  fallbacks(): readonly Fallback[] {
    return this.#fallbacks;
  }

  /** Remote snapshots still being mounted again, and those that could not be (by name). */
  restoreStatus(): { pending: string[]; failed: RestoreFailure[] } {
    const names = (ids: Iterable<string>) =>
      this.store.read((tx) => [...ids].map((id) => tx.byId(id)?.name ?? id));
    const failedIds = [...this.invalid.keys()];
    const failedNames = names(failedIds);
    return {
      pending: names(this.restoring.keys()),
      failed: failedIds.map((id, i) => ({
        name: failedNames[i]!,
        mountpoint: this.upperPath(id),
        error: this.invalid.get(id)!,
      })),
    };
  }

  private upperPath(id: string): string {
    return path.join(this.snapshotsDir, id, "fs");
  }

  private workPath(id: string): string {
    return path.join(this.snapshotsDir, id, "work");
  }

  private async step(name: SnapshotStep): Promise<void> {
    await this.opts.onStep?.(name);
  }

  /** Info of the snapshot named `key`. */
  stat(key: string): Promise<SnapshotInfo> {
    return Promise.resolve().then(() => this.store.read((tx) => tx.getInfo(key).info));
  }

  /** Updates labels (`labels`, `labels.<key>` field paths; none means all mutable fields). */
  async update(
    info: { name: string; labels: Record<string, string> },
    fieldpaths: readonly string[] = [],
  ): Promise<SnapshotInfo> {
    validateLabels(info.labels);
    return await this.store.write((tx) => tx.updateInfo(info.name, info.labels, fieldpaths));
  }

  /**
   * Resources used by the snapshot's own layer: measured for active snapshots, as recorded at
   * commit otherwise (zero for remote snapshots, which are never scanned).
   */
  async usage(key: string): Promise<Usage> {
    const { id, info, usage } = this.store.read((tx) => tx.getInfo(key));
    if (info.kind === "active") return await diskUsage(this.upperPath(id));
    return usage;
  }

  /** Snapshots matching any of `filters` (containerd filter syntax; none means all). */
  list(filters: readonly string[] = []): Promise<SnapshotInfo[]> {
    return Promise.resolve().then(() => {
      const filter = parseFilters(filters);
      return this.store.read((tx) => tx.all()).map((s) => s.info).filter((i) =>
        filter.match(lookupInfo(i))
      );
    });
  }

  /** Mounts of an active or view snapshot, after checking that its remote layers are served. */
  async mounts(key: string): Promise<Mount[]> {
    const s = this.store.read((tx) => tx.getSnapshot(key));
    await this.checkAvailability(key);
    return this.buildMounts(s);
  }

  /**
   * Creates an active snapshot on `parent`. When the labels name a target and a remote source,
   * the layer is mounted through the remote filesystem and committed as the target instead, and
   * the call fails with {@link AlreadyExistsError} so containerd skips unpacking it.
   */
  async prepare(
    key: string,
    parent: string,
    labels: Record<string, string> = {},
  ): Promise<Mount[]> {
    validateLabels(labels);
    if (parent !== "") await this.checkAvailability(parent);
    const s = await this.createSnapshot("active", key, parent, labels);
    const target = labels[TARGET_SNAPSHOT_LABEL];
    if (target === undefined) return this.buildMounts(s);

    const log = this.log.with({ key, parent });
    let reason: string | undefined;
    let kind = "";
    const parsed = parseSource(labels);
    const source = "source" in parsed ? parsed.source : undefined;
    if (!this.fileSystem) {
      reason = "no remote filesystem is configured";
      kind = "NoFileSystem";
    } else if (!source) {
      ({ reason, kind } = parsed as { reason: string; kind: string });
    } else {
      const mountpoint = this.upperPath(s.id);
      log.debug("preparing filesystem mount", { mountpoint });
      try {
        await this.fileSystem.mount(mountpoint, labels);
      } catch (err) {
        reason = errorMessage(err);
        // A class without its own `name` still says what failed by its constructor's name.
        kind = err instanceof Error && err.name === "Error" ? err.constructor.name : String(
          (err as Error)?.name ?? "Error",
        );
      }
    }
    if (reason !== undefined) {
      METRICS.fallbacks.add({ reason: kind });
      this.#fallbacks.push({
        target,
        ref: source?.ref,
        digest: source?.digest,
        reason,
        kind,
        time: Date.now(),
      });
      if (this.#fallbacks.length > FALLBACKS_KEPT) this.#fallbacks.shift();
      const level = this.fileSystem ? "warn" : "info";
      log.log(level, "failed to prepare remote snapshot", {
        [REMOTE_SNAPSHOT_LOG_KEY]: "false",
        reason,
      });
      return this.buildMounts(s);
    }
    try {
      await this.commitSnapshot(
        target,
        key,
        { ...labels, [REMOTE_LABEL]: REMOTE_LABEL_VALUE },
        true,
      );
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) {
        // No fallback: the filesystem already put a layer on this key's directory.
        log.warn("failed to internally commit remote snapshot", {
          [REMOTE_SNAPSHOT_LOG_KEY]: "false",
          reason: errorMessage(err),
        });
        throw err;
      }
    }
    log.info("prepared remote snapshot", { [REMOTE_SNAPSHOT_LOG_KEY]: "true", target });
    throw new AlreadyExistsError(`target snapshot ${JSON.stringify(target)}: already exists`);
  }

  /** Creates a read-only view of `parent`. */
  async view(key: string, parent: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    validateLabels(labels);
    if (parent !== "") await this.checkAvailability(parent);
    const s = await this.createSnapshot("view", key, parent, labels);
    return this.buildMounts(s);
  }

  /** Commits the active snapshot `key` as `name`, recording the usage of its layer. */
  async commit(name: string, key: string, labels: Record<string, string> = {}): Promise<void> {
    validateLabels(labels);
    await this.commitSnapshot(name, key, labels, false);
  }

  private commitSnapshot(
    name: string,
    key: string,
    labels: Record<string, string>,
    isRemote: boolean,
  ): Promise<void> {
    return this.store.write(async (tx) => {
      const { id, usage } = tx.getInfo(key);
      // A remote layer is not scanned: that would fetch the whole layer lazily mounted.
      const measured = isRemote ? usage : await diskUsage(this.upperPath(id));
      await this.step("commit:usage-measured");
      tx.commitActive(key, name, measured, labels);
    });
  }

  /**
   * Removes the snapshot `key` (it must have no children). Its directory goes at once, or at
   * the next {@link cleanup} when removal is asynchronous.
   */
  async remove(key: string): Promise<void> {
    let removals: string[] = [];
    await this.store.write(async (tx) => {
      tx.remove(key);
      await this.step("remove:row-deleted");
      if (!this.asyncRemove) removals = await this.leftoverDirs(tx);
    });
    await this.step("remove:committed");
    for (const dir of removals) {
      await this.removeDir(dir).catch((err) =>
        this.log.warn("failed to remove directory", { path: dir, error: err })
      );
    }
  }

  /** Removes directories that no snapshot owns (unmounting what is mounted in them first). */
  cleanup(): Promise<void> {
    // Holding the write transaction keeps a Prepare from reusing an id being reclaimed.
    return this.store.write(async (tx) => {
      for (const dir of await this.leftoverDirs(tx)) {
        await this.removeDir(dir).catch((err) =>
          this.log.warn("failed to remove directory", { path: dir, error: err })
        );
      }
    });
  }

  /** Waits for the restore, unmounts every remote layer and closes the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.restored.catch(() => {});
    // Layers handed over stay mounted: the containers on them keep running across the restart.
    if (this.fileSystem && !this.fileSystem.handsOver?.()) {
      const remote = this.store.read((tx) => tx.all()).filter((s) => REMOTE_LABEL in s.info.labels);
      const mounted = new Set(await mountPointsUnder(this.snapshotsDir));
      for (const { id } of remote) {
        const mp = this.upperPath(id);
        if (!mounted.has(mp)) continue;
        await this.fileSystem.unmount(mp).catch((err) =>
          this.log.warn("failed to unmount remote snapshot", { mountpoint: mp, error: err })
        );
      }
    }
    await this.store.close();
  }

  private async leftoverDirs(tx: StoreTx): Promise<string[]> {
    const ids = tx.ids();
    const names = await fs.readdir(this.snapshotsDir);
    return names.filter((n) => !ids.has(n)).map((n) => path.join(this.snapshotsDir, n));
  }

  /** Removes a snapshot directory, never through a mount that is still attached to it. */
  private async removeDir(dir: string): Promise<void> {
    const id = path.basename(dir);
    await this.restoring.get(id);
    const upper = path.join(dir, "fs");
    let mounts = await mountPointsUnder(dir);
    if (this.fileSystem && mounts.includes(upper)) {
      // The remote filesystem may need to finalize its layer before it goes away.
      await this.fileSystem.unmount(upper).catch((err) =>
        this.log.debug("failed to unmount", { dir: upper, error: err })
      );
      mounts = await mountPointsUnder(dir);
    }
    for (const m of mounts) await unmount(m);
    if ((await mountPointsUnder(dir)).length > 0) {
      throw new Error(`${dir} is still mounted; not removing it`);
    }
    await fs.rm(dir, { recursive: true, force: true });
  }

  private async createSnapshot(
    kind: "active" | "view",
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<StoredSnapshot> {
    let temp: string | undefined;
    let final: string | undefined;
    try {
      return await this.store.write(async (tx) => {
        temp = await fs.mkdtemp(path.join(this.snapshotsDir, "new-"));
        await fs.mkdir(path.join(temp, "fs"), { mode: 0o755 });
        if (kind === "active") await fs.mkdir(path.join(temp, "work"), { mode: 0o711 });
        await this.step("prepare:dir-created");
        const s = tx.createSnapshot(kind, key, parent, labels);
        await this.step("prepare:row-inserted");
        if (s.parentIds.length > 0) {
          const st = await fs.stat(this.upperPath(s.parentIds[0]!));
          await fs.lchown(path.join(temp, "fs"), st.uid, st.gid);
        }
        final = path.join(this.snapshotsDir, s.id);
        try {
          await fs.rename(temp, final);
        } catch (err) {
          // A process that died before committing may have left a directory under this id.
          if (!isErrno(err, "ENOTEMPTY", "EEXIST")) throw err;
          await this.removeDir(final);
          await fs.rename(temp, final);
        }
        temp = undefined;
        await this.step("prepare:dir-renamed");
        return s;
      });
    } catch (err) {
      for (const dir of [temp, final]) {
        if (dir === undefined) continue;
        await this.removeDir(dir).catch((rmErr) =>
          this.log.error("failed to reclaim snapshot directory", { path: dir, error: rmErr })
        );
      }
      throw err;
    }
  }

  private buildMounts(s: StoredSnapshot): Mount[] {
    if (s.parentIds.length === 0) {
      // overlay needs at least one lower directory, so a base snapshot is a bind mount.
      return [{
        type: "bind",
        source: this.upperPath(s.id),
        options: [s.kind === "view" ? "ro" : "rw", "rbind"],
      }];
    }
    const options: string[] = [];
    if (this.indexOff) options.push("index=off");
    if (s.kind === "active") {
      options.push(`workdir=${this.workPath(s.id)}`, `upperdir=${this.upperPath(s.id)}`);
    } else if (s.parentIds.length === 1) {
      return [{ type: "bind", source: this.upperPath(s.parentIds[0]!), options: ["ro", "rbind"] }];
    }
    options.push(`lowerdir=${s.parentIds.map((id) => this.upperPath(id)).join(":")}`);
    return [{ type: "overlay", source: "overlay", options }];
  }

  /**
   * Checks every remote layer from `key` down to the base (waiting for any still being
   * restored) and fails with {@link UnavailableError} when one cannot be served.
   */
  private async checkAvailability(key: string): Promise<void> {
    const chain = this.store.read((tx) => {
      const out: { id: string; info: SnapshotInfo }[] = [];
      for (let k = key; k !== "";) {
        const { id, info } = tx.getInfo(k);
        out.push({ id, info });
        k = info.parent;
      }
      return out;
    });
    const checks = chain.filter((c) => REMOTE_LABEL in c.info.labels).map(async ({ id, info }) => {
      const mountpoint = this.upperPath(id);
      await this.restoring.get(id);
      const invalid = this.invalid.get(id);
      if (invalid !== undefined) throw new Error(`restore failed: ${invalid}`);
      if (!this.fileSystem) throw new Error("no remote filesystem is configured");
      await this.fileSystem.check(mountpoint, info.labels).catch((err) => {
        this.log.warn("layer is unavailable", { key, "mount-point": mountpoint, error: err });
        throw err;
      });
    });
    const results = await Promise.allSettled(checks);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      throw new UnavailableError(
        `layer ${JSON.stringify(key)} unavailable: ${errorMessage(failed.reason)}`,
      );
    }
  }

  private async releaseStaleMounts(): Promise<void> {
    const remote = new Set(
      this.store.read((tx) => tx.all())
        .filter((s) => s.info.kind === "committed" && REMOTE_LABEL in s.info.labels)
        .map((s) => this.upperPath(s.id)),
    );
    for (const m of await mountPointsUnder(this.snapshotsDir)) {
      if (m === this.snapshotsDir) continue;
      if (remote.has(m) && this.fileSystem?.adoptable?.(m)) continue;
      this.log.info("unmounting stale mount", { mountpoint: m });
      await unmount(m);
    }
  }

  /**
   * Mounts the committed remote snapshots again, a few at a time. Each snapshot's pending mount
   * is in `restoring` until it settles, so requests that touch it wait. Rejects (after all
   * settled) when one failed and invalid mounts are not allowed.
   */
  private async restoreRemoteSnapshots(): Promise<RestoreReport> {
    const report: RestoreReport = { restored: [], failed: [] };
    if (this.opts.restore === false) return report;
    const queue = this.store.read((tx) => tx.all()).filter((s) =>
      s.info.kind === "committed" && REMOTE_LABEL in s.info.labels
    );
    const gates = new Map<string, () => void>();
    for (const { id } of queue) {
      this.restoring.set(id, new Promise<void>((resolve) => gates.set(id, resolve)));
    }
    const restoreOne = async (id: string, info: SnapshotInfo): Promise<void> => {
      const mountpoint = this.upperPath(id);
      try {
        if (!this.fileSystem) throw new Error("no remote filesystem is configured");
        await this.fileSystem.mount(mountpoint, info.labels);
        report.restored.push(info.name);
        this.log.info("restored remote snapshot", { key: info.name, mountpoint });
      } catch (err) {
        const error = errorMessage(err);
        this.invalid.set(id, error);
        report.failed.push({ name: info.name, mountpoint, error });
        this.log.error("failed to restore remote snapshot", { key: info.name, mountpoint, error });
      } finally {
        this.restoring.delete(id);
        gates.get(id)?.();
      }
    };
    const worker = async (): Promise<void> => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        await restoreOne(next.id, next.info);
      }
    };
    await Promise.all(Array.from({ length: RESTORE_PARALLELISM }, worker));
    await this.fileSystem?.releaseUnclaimed?.();
    if (report.failed.length > 0 && !this.opts.allowInvalidMountsOnRestart) {
      throw new RestoreError(report);
    }
    return report;
  }
}

/** Remote snapshots could not be mounted again on start (and that is not allowed). */
export class RestoreError extends Error {
  override name = "RestoreError";
  constructor(readonly report: RestoreReport) {
    super(
      `failed to restore remote snapshots: ${
        report.failed.map((f) => `${f.name}: ${f.error}`).join("; ")
      }`,
    );
  }
}
