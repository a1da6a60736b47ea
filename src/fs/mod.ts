/**
 * The lazy eStargz layer filesystem: mounts one layer of an image from its registry (or a local
 * blob file) through FUSE, fetching chunks on demand. The snapshotter drives it through the
 * {@link FileSystem} cut (`mount / check / unmount`).
 */
import { execFile } from "node:child_process";
import * as path from "node:path";
import type { Config } from "../config/mod.ts";
import type { FdStore } from "../fdstore/mod.ts";
import { closeFd } from "../runtime/mod.ts";
import type { Logger } from "../log/mod.ts";
import { NO_LAYER, observeMs, Operation } from "../metrics/mod.ts";
import type { Digest, RegistryClient, RemoteBlob } from "../registry/mod.ts";
import {
  type RemoteSource,
  remoteSource,
  SKIP_VERIFY_LABEL,
  TOC_DIGEST_LABEL,
} from "../labels/mod.ts";
import type { BackgroundScheduler } from "./_background.ts";
import { ChunkCache } from "./_chunk_cache.ts";
import { backgroundScheduler, cacheOptions, mountOptions, startFetching } from "./_config.ts";
import { adoptLayer, mountLayer } from "./_layer_fuse.ts";
import type { LayerMount } from "./_layer_fuse.ts";
import { Layer, type LayerStartup, type LayerState } from "./layer.ts";
import { ProfileStore } from "./_profiles.ts";
import { SessionTable } from "./_sessions.ts";

export type { LayerStartup };
export { type BlobMount, type BlobMountOptions, mountBlob } from "./_mount_blob.ts";
export { ProfileStore, type ProfileSummary } from "./_profiles.ts";
export { rangeSourceOf } from "./_local_source.ts";
export type { RangeSource } from "./_layer_reader.ts";

/** How long a handed-over mount waits for its layer to open again before it is let go. */
const ADOPT_RETRY_MS = 10 * 60_000;

/** Detaches a dead or unwanted mount left at `mountpoint` (before mounting there anew). */
async function unmountStale(mountpoint: string): Promise<void> {
  await new Promise<void>((resolve) => {
    execFile("umount", ["-l", mountpoint], () => resolve());
  });
}

/** A layer that cannot be mounted remotely; the message says why (the snapshotter logs it). */
export class LayerMountError extends Error {
  override name = "LayerMountError";
}

/** What {@link LayerFileSystem.create} needs. */
export interface LayerFileSystemOptions {
  /** The daemon root; the chunk cache lives in `<root>/cache`. */
  root: string;
  config: Config;
  registry: RegistryClient;
  log: Logger;
  /**
   * Keeps every layer's FUSE connection outside the daemon, so that its mounts outlive a
   * restart: the layers it hands back are served again instead of being mounted anew, and
   * {@link LayerFileSystem.close} leaves them mounted. Without one, closing unmounts.
   */
  fdStore?: FdStore;
}

interface Mounted {
  layer: Layer;
  /** Whether `check` waits for this layer's prefetch (`prefetch_async_size`). */
  waitPrefetch: boolean;
  blob: RemoteBlob;
  mount: LayerMount;
  labels: Record<string, string>;
  /** The image the layer was mounted for. */
  ref: string;
  /** Bytes prefetched before background fetch (0: none). */
  prefetchSize: number;
  lastCheck: number;
}

/** One mounted layer as the admin API and metrics show it. */
export interface MountedLayer {
  mountpoint: string;
  ref: string;
  digest: string;
  prefetchSize: number;
  state: LayerState;
  /** Bytes local at the container's first read; the learned profile replayed or recorded. */
  startup: LayerStartup;
}

interface Resolved {
  layer: Layer;
  blob: RemoteBlob;
  expires: number;
}

/**
 * Mounts eStargz layers from registries: the snapshotter's remote `FileSystem` (implemented
 * structurally, so that this module does not depend on the snapshotter above it).
 */
export class LayerFileSystem {
  readonly #mounts = new Map<string, Mounted>();
  /** Layers opened ahead of their Prepare (neighbours of a mounted layer), by digest. */
  readonly #resolved = new Map<Digest, Promise<Resolved>>();

  /** Connections handed back by the fd store and not yet served again, by mount point. */
  readonly #handedBack = new Map<string, number>();
  /** Handed-back mounts whose layer could not be opened yet (see `#retryAdoption`). */
  readonly #adoptRetries = new Map<
    string,
    { attempt: number; since: number; timer?: ReturnType<typeof setTimeout> }
  >();
  #closing = false;

  private constructor(
    readonly opts: LayerFileSystemOptions,
    readonly cache: ChunkCache,
    readonly scheduler: BackgroundScheduler,
    /** Learned prefetch profiles (undefined when `[prefetch_profile] enabled` is off). */
    readonly profiles: ProfileStore | undefined,
    private readonly sessions: SessionTable,
  ) {
    for (const [mp, fd] of opts.fdStore?.handedBack ?? []) this.#handedBack.set(mp, fd);
  }

  /** Opens the chunk cache, the background scheduler, the profile store and the saved FUSE sessions. */
  static async create(opts: LayerFileSystemOptions): Promise<LayerFileSystem> {
    const cache = await ChunkCache.open(
      path.join(opts.root, "cache"),
      cacheOptions(opts.config),
      opts.log,
    );
    const p = opts.config.prefetch_profile;
    const profiles = p.enabled ? ProfileStore.open(opts.root, p.max_profiles) : undefined;
    const sessions = SessionTable.open(path.join(opts.root, "fuse-sessions.db"));
    return new LayerFileSystem(opts, cache, backgroundScheduler(opts.config), profiles, sessions);
  }

  /**
   * True when the mount at `mountpoint` is a live connection a previous daemon handed over:
   * {@link mount} will serve it again, so it must not be unmounted as stale.
   */
  adoptable(mountpoint: string): boolean {
    return this.#handedBack.has(mountpoint) && this.sessions.get(mountpoint) !== undefined;
  }

  /** True when closing leaves the layers mounted for the next daemon. */
  handsOver(): boolean {
    return this.opts.fdStore !== undefined;
  }

  /** Lets go of connections handed back that no snapshot claimed (their mounts are gone). */
  async releaseUnclaimed(): Promise<void> {
    for (const [mp, fd] of [...this.#handedBack]) {
      if (!this.#adoptRetries.has(mp)) await this.#release(mp, fd);
    }
    for (const mp of this.sessions.mountpoints()) {
      if (!this.#mounts.has(mp) && !this.#adoptRetries.has(mp)) this.sessions.delete(mp);
    }
  }

  async #release(mountpoint: string, fd: number): Promise<void> {
    this.#handedBack.delete(mountpoint);
    closeFd(fd);
    this.sessions.delete(mountpoint);
    await this.opts.fdStore?.drop(mountpoint).catch((err) =>
      this.opts.log.warn("fd store: cannot drop", { mountpoint, error: err })
    );
  }

  /** Serves the handed-back connection at `mountpoint` again, if there is one that still works. */
  async #adopt(layer: Layer, mountpoint: string, log: Logger): Promise<LayerMount | undefined> {
    const fd = this.#handedBack.get(mountpoint);
    const state = this.sessions.get(mountpoint);
    if (fd === undefined) return undefined;
    this.#handedBack.delete(mountpoint);
    if (state) {
      try {
        const m = await adoptLayer(
          layer,
          mountpoint,
          fd,
          state,
          mountOptions(this.opts.config, log),
        );
        log.info("layer mount taken over from the previous daemon", { mountpoint, ...state });
        return m;
      } catch (err) {
        log.warn("cannot take over the layer mount; mounting it anew", { mountpoint, error: err });
      }
    }
    await this.#release(mountpoint, fd);
    await unmountStale(mountpoint);
    return undefined;
  }

  /**
   * The layer of a handed-over mount cannot be opened (registry unreachable): its containers'
   * requests wait in the kernel while this retries with backoff, for up to
   * {@link ADOPT_RETRY_MS}; only then is the connection let go (and its containers break).
   */
  #retryAdoption(
    mountpoint: string,
    labels: Record<string, string>,
    err: unknown,
    log: Logger,
  ): void {
    const r = this.#adoptRetries.get(mountpoint) ?? { attempt: 0, since: Date.now() };
    this.#adoptRetries.set(mountpoint, r);
    if (this.#closing) return;
    if (Date.now() - r.since > ADOPT_RETRY_MS) {
      log.error("giving up on a handed-over layer mount", { mountpoint, error: err });
      this.#adoptRetries.delete(mountpoint);
      const fd = this.#handedBack.get(mountpoint);
      if (fd !== undefined) void this.#release(mountpoint, fd).then(() => unmountStale(mountpoint));
      return;
    }
    const delay = Math.min(30_000, 1000 * 2 ** r.attempt++);
    log.warn("cannot open the layer of a handed-over mount; its containers wait, retrying", {
      mountpoint,
      retryInMs: delay,
      error: err,
    });
    r.timer = setTimeout(() => {
      this.mount(mountpoint, labels).catch((e) =>
        log.error("cannot serve a handed-over layer mount", { mountpoint, error: e })
      );
    }, delay);
  }

  /** Keeps the new mount's connection outside this process and saves what a successor needs. */
  async #keep(mountpoint: string, m: LayerMount): Promise<void> {
    const store = this.opts.fdStore;
    if (!store) return;
    this.sessions.put(mountpoint, m.state());
    try {
      await store.keep(mountpoint, m.deviceFd);
    } catch (err) {
      this.opts.log.warn("fd store: this mount will not survive a restart", {
        mountpoint,
        error: err,
      });
    }
  }

  /**
   * Starts the layer's learned prefetch when a profile of its digest exists, else records one
   * from its first reads. A store that fails only costs the hint, never the mount.
   */
  #learn(layer: Layer): void {
    const store = this.profiles;
    if (!store) return;
    const log = this.opts.log.with({ layer: layer.digest });
    let files: string[] | undefined;
    try {
      files = store.files(layer.digest);
    } catch (err) {
      log.warn("prefetch profile unreadable", { error: err });
      return;
    }
    if (files) {
      layer.replayProfile(files);
      return;
    }
    const p = this.opts.config.prefetch_profile;
    layer.recordReads(p.window_sec * 1000, p.max_files, (recorded) => {
      if (recorded.length === 0) return;
      try {
        store.save(layer.digest, recorded);
        log.info("prefetch profile recorded", { files: recorded.length });
      } catch (err) {
        log.warn("prefetch profile not saved", { error: err });
      }
    });
  }

  #verification(src: RemoteSource, labels: Record<string, string>): Digest | undefined {
    if (src.tocDigest) return src.tocDigest;
    const c = this.opts.config;
    if (c.disable_verification) return undefined;
    if (labels[SKIP_VERIFY_LABEL] !== undefined && c.allow_no_verification) return undefined;
    throw new LayerMountError(
      `no TOC digest label (${TOC_DIGEST_LABEL}): refusing to mount an unverifiable layer`,
    );
  }

  /** Opens (or reuses a pre-opened) layer: blob location, footer, TOC and tree. */
  #resolve(ref: string, digest: Digest, expectedTocDigest: Digest | undefined): Promise<Resolved> {
    const now = Date.now();
    const cached = this.#resolved.get(digest);
    if (cached) {
      this.#resolved.delete(digest);
      return cached.then((r) => {
        if (
          r.expires > now &&
          (expectedTocDigest === undefined || r.layer.blob.tocDigest === expectedTocDigest)
        ) return r;
        r.layer.close();
        return this.#open(ref, digest, expectedTocDigest);
      }, () => this.#open(ref, digest, expectedTocDigest));
    }
    return this.#open(ref, digest, expectedTocDigest);
  }

  /**
   * Locates the blob, then (once `after` settles) inflates, parses and indexes its TOC: a
   * neighbour's request goes out at once, its CPU work waits for the mount being served.
   */
  async #open(
    ref: string,
    digest: Digest,
    expectedTocDigest: Digest | undefined,
    after?: Promise<void>,
  ): Promise<Resolved> {
    const blob = await this.opts.registry.openBlob(ref, digest);
    await after;
    const layer = await Layer.open({
      digest,
      source: blob,
      expectedTocDigest,
      tail: blob.takeTail(),
      cache: this.cache,
      scheduler: this.scheduler,
      log: this.opts.log,
      minFetchBytes: this.opts.config.blob.chunk_size,
    });
    return {
      layer,
      blob,
      expires: Date.now() + this.opts.config.resolve_result_entry_ttl_sec * 1000,
    };
  }

  /** Opens the image's other layers in the background, so their Prepare mounts at once. */
  #resolveNeighbours(
    ref: string,
    self: Digest,
    layers: readonly Digest[],
    after: Promise<void>,
  ): void {
    const now = Date.now();
    for (const [d, p] of this.#resolved) {
      p.then((r) => {
        if (r.expires <= now && this.#resolved.get(d) === p) {
          this.#resolved.delete(d);
          r.layer.close();
        }
      }, () => {});
    }
    const c = this.opts.config;
    for (const d of layers) {
      if (
        d === self || this.#resolved.has(d) ||
        [...this.#mounts.values()].some((m) => m.layer.digest === d)
      ) continue;
      // The TOC digest of a neighbour is unknown here: it is checked when its Prepare arrives.
      const p = this.#open(ref, d, undefined, after);
      // Prefetch neighbours in parallel, as upstream does: their chunks are verified against
      // the digests in their TOC, and their TOC against the label when their Prepare comes.
      p.then(
        (r) => {
          this.#learn(r.layer);
          startFetching(r.layer, c, { background: false });
        },
        () => this.#resolved.delete(d),
      );
      this.#resolved.set(d, p);
    }
  }

  /** Mounts the layer described by the Prepare labels at `mountpoint`. */
  async mount(mountpoint: string, labels: Record<string, string>): Promise<void> {
    const src = remoteSource(labels);
    if (!src) throw new LayerMountError("no image reference and layer digest labels");
    const expected = this.#verification(src, labels);
    const started = performance.now();
    const log = this.opts.log.with({ layer: src.digest, ref: src.ref });
    const c = this.opts.config;
    // Parsing a neighbour's TOC on this thread while this layer's TOC is parsed or its FUSE INIT
    // awaits an answer would delay the Prepare containerd is waiting for.
    let served!: () => void;
    this.#resolveNeighbours(
      src.ref,
      src.digest,
      src.layers,
      new Promise<void>((r) => (served = r)),
    );
    let layer: Layer;
    let blob: RemoteBlob;
    let mount: LayerMount;
    try {
      let resolved: Resolved;
      try {
        resolved = await this.#resolve(src.ref, src.digest, expected);
      } catch (err) {
        if (!this.adoptable(mountpoint)) throw err;
        this.#retryAdoption(mountpoint, labels, err, log);
        return;
      }
      ({ layer, blob } = resolved);
      this.#adoptRetries.delete(mountpoint);
      try {
        mount = await this.#adopt(layer, mountpoint, log) ??
          await mountLayer(layer, mountpoint, mountOptions(c, log));
        await this.#keep(mountpoint, mount);
      } catch (err) {
        layer.close();
        throw err;
      }
    } finally {
      served();
    }
    // After the mount is served, like the neighbours' work: the replay's decoding would
    // otherwise run while containerd still waits for this Prepare.
    this.#learn(layer);
    const prefetch = startFetching(layer, c, {
      prefetchSize: src.prefetchSize !== undefined && src.prefetchSize > 0
        ? src.prefetchSize
        : undefined,
    });
    // Upstream: a prefetch larger than prefetch_async_size runs without holding up the mount.
    const waitPrefetch = c.prefetch_async_size === 0 || prefetch <= c.prefetch_async_size;
    this.#mounts.set(mountpoint, {
      layer,
      blob,
      mount,
      labels,
      ref: src.ref,
      prefetchSize: prefetch,
      waitPrefetch,
      lastCheck: Date.now(),
    });
    mount.closed.then(() => {
      if (this.#mounts.get(mountpoint)?.mount === mount) {
        log.warn("layer mount ended from outside", { mountpoint });
        this.#mounts.delete(mountpoint);
        layer.close();
        this.sessions.delete(mountpoint);
        this.opts.fdStore?.drop(mountpoint).catch(() => {});
      }
    });
    observeMs(Operation.mount, src.digest, started);
    log.info("layer mounted", {
      mountpoint,
      tocDigest: layer.blob.tocDigest,
      verified: expected !== undefined,
    });
  }

  /**
   * Healthy when the layer is fully fetched, or when its blob still answers a small range
   * request (at most every `valid_interval` seconds unless `check_always`); on failure the blob
   * is resolved again once. Also waits for prefetch up to `prefetch_timeout_sec`.
   */
  async check(mountpoint: string, _labels: Record<string, string>): Promise<void> {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new LayerMountError(`no layer is mounted at ${mountpoint}`);
    const c = this.opts.config;
    if (m.waitPrefetch) {
      // Upstream's measure of how long a container start is held up by prefetch.
      const started = performance.now();
      await m.layer.waitPrefetch(c.prefetch_timeout_sec * 1000);
      observeMs(Operation.prefetchesCompleted, NO_LAYER, started);
    }
    if (m.layer.complete) return;
    if (!c.blob.check_always && Date.now() - m.lastCheck < c.blob.valid_interval * 1000) return;
    try {
      await m.blob.check();
    } catch (first) {
      this.opts.log.warn("layer blob check failed; resolving it again", {
        layer: m.layer.digest,
        error: first,
      });
      await m.blob.refresh();
      await m.blob.check();
    }
    m.lastCheck = Date.now();
  }

  /** Unmounts the layer at `mountpoint` and stops its background work. */
  async unmount(mountpoint: string): Promise<void> {
    const retry = this.#adoptRetries.get(mountpoint);
    if (retry) {
      clearTimeout(retry.timer);
      this.#adoptRetries.delete(mountpoint);
    }
    const handed = this.#handedBack.get(mountpoint);
    if (handed !== undefined) await this.#release(mountpoint, handed);
    const m = this.#mounts.get(mountpoint);
    if (!m) return;
    this.#mounts.delete(mountpoint);
    m.layer.close();
    await m.mount.unmount();
    this.sessions.delete(mountpoint);
    await this.opts.fdStore?.drop(mountpoint).catch((err) =>
      this.opts.log.warn("fd store: cannot drop", { mountpoint, error: err })
    );
  }

  /** The mounted layers, for the admin view. */
  mounted(): MountedLayer[] {
    return [...this.#mounts].map(([mountpoint, m]) => ({
      mountpoint,
      ref: m.ref,
      digest: m.layer.digest,
      prefetchSize: m.prefetchSize,
      state: m.layer.state(),
      startup: m.layer.startup(),
    }));
  }

  /**
   * Daemon shutdown: with an fd store the layers stay mounted, held there, for the next daemon
   * (requests being answered are answered first); without one every layer is unmounted.
   */
  async close(): Promise<void> {
    this.#closing = true;
    // Still held by the fd store: the next daemon tries again.
    for (const r of this.#adoptRetries.values()) clearTimeout(r.timer);
    const store = this.opts.fdStore;
    if (store) {
      const mounts = [...this.#mounts.values()];
      this.#mounts.clear();
      await Promise.allSettled(mounts.map((m) => m.mount.detach()));
      // The layers stay open: requests read until the process exits are still answered (on
      // kernels without FUSE_NOTIFY_RESEND nobody else would answer them).
      store.close();
    } else {
      await Promise.allSettled([...this.#mounts.keys()].map((mp) => this.unmount(mp)));
    }
    for (const p of this.#resolved.values()) p.then((r) => r.layer.close(), () => {});
    await Promise.allSettled(this.#resolved.values());
    this.#resolved.clear();
    this.profiles?.close();
    this.sessions.close();
  }
}
