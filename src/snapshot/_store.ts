/**
 * The metadata store: snapshots, their parent links, labels and usage in SQLite (WAL) at
 * `<root>/metadata.db`. Reads use their own connection, so they only ever see committed state;
 * writes go through one connection, one transaction at a time, and may await file system work
 * while the transaction is open (its effects become visible atomically at COMMIT).
 */
import { DatabaseSync } from "node:sqlite";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "./errors.ts";
import type { SnapshotInfo, SnapshotKind, Timestamp, Usage } from "./types.ts";

const KIND_CODES: Record<SnapshotKind, number> = { view: 1, active: 2, committed: 3 };
const KINDS: Record<number, SnapshotKind> = { 1: "view", 2: "active", 3: "committed" };

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  parent_id INTEGER REFERENCES snapshots(id),
  kind INTEGER NOT NULL,
  created_us INTEGER NOT NULL,
  updated_us INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, name)
);
`;

/** A stored snapshot: its directory id (a decimal string, as containerd's) and its parent ids. */
export interface StoredSnapshot {
  id: string;
  kind: SnapshotKind;
  /** Ids of the parent chain, nearest parent first. */
  parentIds: string[];
}

/** A stored snapshot's info together with its id and recorded usage. */
export interface StoredInfo {
  id: string;
  info: SnapshotInfo;
  usage: Usage;
}

interface Row {
  id: number;
  key: string;
  parent_id: number | null;
  kind: number;
  created_us: number;
  updated_us: number;
  size: number;
  inodes: number;
}

function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function timestamp(us: number): Timestamp {
  const seconds = Math.floor(us / 1e6);
  return { seconds, nanos: (us - seconds * 1e6) * 1000 };
}

function asRow(v: unknown): Row | undefined {
  return v === undefined ? undefined : (v as Row);
}

/** Operations inside one transaction; every method is synchronous. */
export class StoreTx {
  constructor(private readonly db: DatabaseSync) {}

  private row(key: string): Row | undefined {
    return asRow(this.db.prepare("SELECT * FROM snapshots WHERE key = ?").get(key));
  }

  private rowById(id: number): Row | undefined {
    return asRow(this.db.prepare("SELECT * FROM snapshots WHERE id = ?").get(id));
  }

  private mustRow(key: string): Row {
    const r = this.row(key);
    if (!r) throw new NotFoundError(`snapshot ${key} does not exist`);
    return r;
  }

  private labels(id: number): Record<string, string> {
    const out: Record<string, string> = {};
    const rows = this.db.prepare(
      "SELECT name, value FROM labels WHERE snapshot_id = ? ORDER BY name",
    )
      .all(id) as { name: string; value: string }[];
    for (const r of rows) out[r.name] = r.value;
    return out;
  }

  private writeLabels(id: number, labels: Record<string, string>): void {
    this.db.prepare("DELETE FROM labels WHERE snapshot_id = ?").run(id);
    const ins = this.db.prepare("INSERT INTO labels (snapshot_id, name, value) VALUES (?, ?, ?)");
    // An empty value removes the label, as in containerd's label store.
    for (const [k, v] of Object.entries(labels)) if (v !== "") ins.run(id, k, v);
  }

  private info(r: Row): SnapshotInfo {
    const parent = r.parent_id === null ? undefined : this.rowById(r.parent_id);
    return {
      name: r.key,
      parent: parent?.key ?? "",
      kind: KINDS[r.kind] ?? "committed",
      created: timestamp(r.created_us),
      updated: timestamp(r.updated_us),
      labels: this.labels(r.id),
    };
  }

  private parentIds(r: Row): string[] {
    const ids: string[] = [];
    for (let p = r.parent_id; p !== null;) {
      ids.push(String(p));
      const pr = this.rowById(p);
      if (!pr) throw new NotFoundError(`missing parent of snapshot ${r.key}`);
      p = pr.parent_id;
    }
    return ids;
  }

  /** Info, id and recorded usage of the snapshot named `key`. */
  getInfo(key: string): StoredInfo {
    const r = this.mustRow(key);
    return { id: String(r.id), info: this.info(r), usage: { size: r.size, inodes: r.inodes } };
  }

  /** The active or view snapshot `key` with its parent chain (for building mounts). */
  getSnapshot(key: string): StoredSnapshot {
    const r = this.mustRow(key);
    const kind = KINDS[r.kind] ?? "committed";
    if (kind !== "active" && kind !== "view") {
      throw new FailedPreconditionError(`requested snapshot ${key} not active or view`);
    }
    return { id: String(r.id), kind, parentIds: this.parentIds(r) };
  }

  /** Inserts an active or view snapshot on top of the committed `parent` ("" for none). */
  createSnapshot(
    kind: SnapshotKind,
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): StoredSnapshot {
    if (kind === "committed") {
      throw new InvalidArgumentError(
        `snapshot type ${kind} invalid; only active or view can be created`,
      );
    }
    let parentRow: Row | undefined;
    if (parent !== "") {
      parentRow = this.row(parent);
      if (!parentRow) throw new NotFoundError(`missing parent ${JSON.stringify(parent)}`);
      if (parentRow.kind !== KIND_CODES.committed) {
        throw new InvalidArgumentError(
          `parent ${JSON.stringify(parent)} is not committed snapshot`,
        );
      }
    }
    if (this.row(key)) throw new AlreadyExistsError(`snapshot ${key} already exists`);
    const t = nowMicros();
    const res = this.db.prepare(
      "INSERT INTO snapshots (key, parent_id, kind, created_us, updated_us) VALUES (?, ?, ?, ?, ?)",
    ).run(key, parentRow?.id ?? null, KIND_CODES[kind], t, t);
    const id = Number(res.lastInsertRowid);
    this.writeLabels(id, labels);
    const inserted = this.rowById(id)!;
    return { id: String(id), kind, parentIds: this.parentIds(inserted) };
  }

  /**
   * Turns the active snapshot `key` into the committed snapshot `name` (same id, so children and
   * directories stay put). Labels are replaced, not inherited, as containerd does.
   */
  commitActive(key: string, name: string, usage: Usage, labels: Record<string, string>): string {
    if (this.row(name)) throw new AlreadyExistsError(`committed snapshot ${name} already exists`);
    const r = this.row(key);
    if (!r) throw new NotFoundError(`failed to get active snapshot ${JSON.stringify(key)}`);
    if (r.kind !== KIND_CODES.active) {
      throw new FailedPreconditionError(`snapshot ${JSON.stringify(key)} is not active`);
    }
    const t = nowMicros();
    this.db.prepare(
      "UPDATE snapshots SET key = ?, kind = ?, created_us = ?, updated_us = ?, size = ?, inodes = ? WHERE id = ?",
    ).run(name, KIND_CODES.committed, t, t, usage.size, usage.inodes, r.id);
    this.writeLabels(r.id, labels);
    return String(r.id);
  }

  /** Deletes the snapshot `key`; refuses while it has children. Returns its id and kind. */
  remove(key: string): { id: string; kind: SnapshotKind } {
    const r = this.mustRow(key);
    const child = this.db.prepare("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1").get(r.id);
    if (child) throw new FailedPreconditionError(`cannot remove snapshot ${key} with child`);
    this.db.prepare("DELETE FROM labels WHERE snapshot_id = ?").run(r.id);
    this.db.prepare("DELETE FROM snapshots WHERE id = ?").run(r.id);
    return { id: String(r.id), kind: KINDS[r.kind] ?? "committed" };
  }

  /**
   * Applies the mutable parts of `info` (labels) to the stored snapshot. `fieldpaths` may name
   * `labels` or `labels.<key>`; empty means all mutable fields.
   */
  updateInfo(
    name: string,
    labels: Record<string, string>,
    fieldpaths: readonly string[],
  ): SnapshotInfo {
    const r = this.mustRow(name);
    const updated = this.labels(r.id);
    let next: Record<string, string> = updated;
    if (fieldpaths.length === 0) next = { ...labels };
    for (const path of fieldpaths) {
      if (path.startsWith("labels.")) {
        const k = path.slice("labels.".length);
        next[k] = labels[k] ?? "";
      } else if (path === "labels") {
        next = { ...labels };
      } else {
        throw new InvalidArgumentError(
          `cannot update ${JSON.stringify(path)} field on snapshot ${JSON.stringify(name)}`,
        );
      }
    }
    this.writeLabels(r.id, next);
    this.db.prepare("UPDATE snapshots SET updated_us = ? WHERE id = ?").run(nowMicros(), r.id);
    return this.info(this.rowById(r.id)!);
  }

  /** Every snapshot with its id, in id order. */
  all(): { id: string; info: SnapshotInfo }[] {
    const rows = this.db.prepare("SELECT * FROM snapshots ORDER BY id").all() as unknown as Row[];
    return rows.map((r) => ({ id: String(r.id), info: this.info(r) }));
  }

  /** The set of directory ids the store references. */
  ids(): Set<string> {
    const rows = this.db.prepare("SELECT id FROM snapshots").all() as { id: number }[];
    return new Set(rows.map((r) => String(r.id)));
  }

  /** Info of the snapshot with directory id `id`, if any. */
  byId(id: string): SnapshotInfo | undefined {
    const r = this.rowById(Number(id));
    return r ? this.info(r) : undefined;
  }
}

/** The SQLite-backed metadata store. */
export class MetaStore {
  private writeQueue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly writer: DatabaseSync,
    private readonly reader: DatabaseSync,
  ) {}

  /** Opens (creating when missing) the store at `file`. */
  static open(file: string): MetaStore {
    const writer = new DatabaseSync(file);
    writer.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
    writer.exec("PRAGMA busy_timeout = 5000;");
    writer.exec(SCHEMA);
    const reader = new DatabaseSync(file);
    reader.exec("PRAGMA busy_timeout = 5000;");
    return new MetaStore(writer, reader);
  }

  /** Runs `fn` in a read transaction that sees only committed state. */
  read<T>(fn: (tx: StoreTx) => T): T {
    this.reader.exec("BEGIN");
    try {
      return fn(new StoreTx(this.reader));
    } finally {
      this.reader.exec("COMMIT");
    }
  }

  /**
   * Runs `fn` in the write transaction, after every earlier writer finished. The transaction
   * commits when `fn` resolves and rolls back when it throws (or the process dies).
   */
  write<T>(fn: (tx: StoreTx) => Promise<T> | T): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.closed) throw new Error("metadata store is closed");
      this.writer.exec("BEGIN IMMEDIATE");
      let result: T;
      try {
        result = await fn(new StoreTx(this.writer));
      } catch (err) {
        this.writer.exec("ROLLBACK");
        throw err;
      }
      this.writer.exec("COMMIT");
      return result;
    };
    const next = this.writeQueue.then(run, run);
    this.writeQueue = next.catch(() => {});
    return next;
  }

  /** Waits for pending writes and closes both connections. */
  async close(): Promise<void> {
    await this.writeQueue;
    if (this.closed) return;
    this.closed = true;
    this.writer.close();
    this.reader.close();
  }
}
