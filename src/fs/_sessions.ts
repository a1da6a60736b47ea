/**
 * The FUSE sessions this daemon serves, in SQLite at `<root>/fuse-sessions.db`: for each mount
 * point what a successor needs to serve its connection again without INIT (`SessionState`).
 * The descriptors themselves live in the fd store; this is the half that fits in a file.
 */
import { DatabaseSync } from "node:sqlite";
import * as v from "valibot";
import type { SessionState } from "../fuse/mod.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS fuse_sessions (
  mountpoint TEXT PRIMARY KEY,
  dev TEXT NOT NULL,
  protocol TEXT NOT NULL,
  max_read INTEGER NOT NULL
);
`;

const Row = v.object({
  mountpoint: v.string(),
  dev: v.pipe(v.string(), v.regex(/^\d+:\d+$/)),
  protocol: v.pipe(v.string(), v.regex(/^7\.\d+$/)),
  max_read: v.pipe(v.number(), v.integer(), v.minValue(4096)),
});

/** Session states by mount point. */
export class SessionTable {
  readonly #db: DatabaseSync;

  private constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** Opens (creating) the table in `file`. */
  static open(file: string): SessionTable {
    const db = new DatabaseSync(file);
    db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    db.exec(SCHEMA);
    return new SessionTable(db);
  }

  /** The state saved for `mountpoint`, if any (rows that do not parse count as none). */
  get(mountpoint: string): SessionState | undefined {
    const raw = this.#db.prepare("SELECT * FROM fuse_sessions WHERE mountpoint = ?").get(
      mountpoint,
    );
    const row = v.safeParse(Row, raw);
    if (!row.success) return undefined;
    return { dev: row.output.dev, protocol: row.output.protocol, maxRead: row.output.max_read };
  }

  put(mountpoint: string, s: SessionState): void {
    this.#db.prepare(
      "INSERT OR REPLACE INTO fuse_sessions (mountpoint, dev, protocol, max_read) VALUES (?, ?, ?, ?)",
    ).run(mountpoint, s.dev, s.protocol, s.maxRead);
  }

  delete(mountpoint: string): void {
    this.#db.prepare("DELETE FROM fuse_sessions WHERE mountpoint = ?").run(mountpoint);
  }

  /** Every mount point with a saved state. */
  mountpoints(): string[] {
    return this.#db.prepare("SELECT mountpoint FROM fuse_sessions").all().map((r) =>
      String((r as { mountpoint: unknown }).mountpoint)
    );
  }

  close(): void {
    this.#db.close();
  }
}
