/**
 * JSON-lines logging on stderr, shaped like logrus' JSON formatter used by the Go snapshotter:
 * `{"level":"info","msg":"…","time":"2026-11-27T19:05:10.123456789Z", …fields}`.
 */

/** Log levels in logrus order, most verbose first. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "panic"] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** Where log lines go; tests replace it to capture output. */
export type LogSink = (line: string) => void;

let minLevel = LOG_LEVELS.indexOf("info");
let sink: LogSink = (line) => process.stderr.write(line + "\n");

/** Parses a level name as the Go daemon's `--log-level` accepts it (`warning` is `warn`). */
export function parseLogLevel(name: string): LogLevel | undefined {
  const n = name.toLowerCase() === "warning" ? "warn" : name.toLowerCase();
  return (LOG_LEVELS as readonly string[]).includes(n) ? (n as LogLevel) : undefined;
}

/** Sets the least severe level that is still written. */
export function setLogLevel(level: LogLevel): void {
  minLevel = LOG_LEVELS.indexOf(level);
}

/** Sends log lines somewhere else (returns the previous sink). */
export function setLogSink(next: LogSink): LogSink {
  const prev = sink;
  sink = next;
  return prev;
}

/** True when a line at `level` would be written. */
export function logEnabled(level: LogLevel): boolean {
  return LOG_LEVELS.indexOf(level) >= minLevel;
}

/**
 * Current wall-clock time as RFC 3339 with nanoseconds, in UTC. Milliseconds come from the wall
 * clock (which follows NTP adjustments in a long-running daemon); the finer digits from the
 * monotonic clock, which is only used for ordering lines within a millisecond.
 */
export function rfc3339Nano(): string {
  const ms = Date.now();
  const subMs = Math.floor((performance.now() % 1) * 1e6);
  const iso = new Date(ms).toISOString(); // 2026-11-27T19:05:10.123Z
  const frac = String((ms % 1000) * 1e6 + subMs).padStart(9, "0");
  return `${iso.slice(0, 19)}.${frac}Z`;
}

function errorText(value: unknown): unknown {
  return value instanceof Error ? value.message : value;
}

/** A logger carrying fixed fields; `with` derives a child with more fields. */
export class Logger {
  constructor(private readonly fields: LogFields = {}) {}

  /** A logger that adds `extra` to every line. */
  with(extra: LogFields): Logger {
    return new Logger({ ...this.fields, ...extra });
  }

  /** Writes one line at `level`. */
  log(level: LogLevel, msg: string, extra?: LogFields): void {
    if (!logEnabled(level)) return;
    const line: LogFields = { level, msg, time: rfc3339Nano() };
    for (const [k, v] of Object.entries({ ...this.fields, ...extra })) {
      if (k !== "level" && k !== "msg" && k !== "time") line[k] = errorText(v);
    }
    sink(JSON.stringify(line, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
  }

  trace(msg: string, extra?: LogFields): void {
    this.log("trace", msg, extra);
  }
  debug(msg: string, extra?: LogFields): void {
    this.log("debug", msg, extra);
  }
  info(msg: string, extra?: LogFields): void {
    this.log("info", msg, extra);
  }
  warn(msg: string, extra?: LogFields): void {
    this.log("warn", msg, extra);
  }
  error(msg: string, extra?: LogFields): void {
    this.log("error", msg, extra);
  }
}

/** The process-wide root logger. */
export const log: Logger = new Logger();
