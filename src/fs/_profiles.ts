/**
 * Learned prefetch profiles: for each layer digest, the files its first container read in the
 * first seconds, in order, kept in SQLite (WAL) at `<root>/prefetch_profiles.db` so that they
 * outlive restarts and cache evictions. A profile is advisory: it decides what a later mount
 * fetches early, never what a read returns (every chunk is still verified against the TOC).
 */
import { DatabaseSync } from "node:sqlite";
import * as path from "node:path";
import * as v from "valibot";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS prefetch_profiles (
  layer TEXT PRIMARY KEY,
  files TEXT NOT NULL,
  file_count INTEGER NOT NULL,
  recorded_ms INTEGER NOT NULL
);
`;

/** The file list as stored: read back from disk, so parsed like any outside data. */
const FilesSchema = v.array(v.string());

const RowSchema = v.object({
  layer: v.string(),
  files: v.string(),
  file_count: v.number(),
  recorded_ms: v.number(),
});

/** One stored profile, as the admin API lists it. */
export interface ProfileSummary {
  layer: string;
  files: number;
  recordedAt: string;
}

/** The profiles of one daemon root. */
export class ProfileStore {
  private constructor(
    private readonly db: DatabaseSync,
    private readonly maxProfiles: number,
  ) {}

  /** Opens (creating) `<root>/prefetch_profiles.db`; at most `maxProfiles` are kept. */
  static open(root: string, maxProfiles: number): ProfileStore {
    const db = new DatabaseSync(path.join(root, "prefetch_profiles.db"));
    db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;");
    db.exec(SCHEMA);
    return new ProfileStore(db, maxProfiles);
  }

  /** The files recorded for `layer`, in the order they were first read; undefined if none. */
  files(layer: string): string[] | undefined {
    const row = this.db.prepare("SELECT files FROM prefetch_profiles WHERE layer = ?").get(layer);
    if (row === undefined) return undefined;
    let json: unknown;
    try {
      json = JSON.parse(String((row as { files: unknown }).files));
    } catch {
      return undefined;
    }
    const parsed = v.safeParse(FilesSchema, json);
    // A damaged row is only a lost hint: the layer is recorded again.
    return parsed.success ? parsed.output : undefined;
  }

  /** Stores `files` as the profile of `layer` (replacing one) and drops the oldest over the cap. */
  save(layer: string, files: readonly string[]): void {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      this.db.prepare(
        "INSERT OR REPLACE INTO prefetch_profiles (layer, files, file_count, recorded_ms) VALUES (?, ?, ?, ?)",
      ).run(layer, JSON.stringify(files), files.length, Date.now());
      this.db.prepare(
        // REPLACE inserts a new row, so rowid orders profiles by when they were recorded.
        "DELETE FROM prefetch_profiles WHERE rowid NOT IN (SELECT rowid FROM prefetch_profiles ORDER BY rowid DESC LIMIT ?)",
      ).run(this.maxProfiles);
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      throw err;
    }
  }

  /** Every profile, newest first. */
  list(): ProfileSummary[] {
    const rows = this.db.prepare(
      "SELECT layer, files, file_count, recorded_ms FROM prefetch_profiles ORDER BY rowid DESC",
    ).all();
    return rows.flatMap((r) => {
      const p = v.safeParse(RowSchema, r);
      if (!p.success) return [];
      return [{
        layer: p.output.layer,
        files: p.output.file_count,
        recordedAt: new Date(p.output.recorded_ms).toISOString(),
      }];
    });
  }

  close(): void {
    this.db.close();
  }
}
