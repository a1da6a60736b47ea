/**
 * The holder's wire protocol: one JSON object per line each way, one reply per request, in
 * order. Kept small and stable: a daemon of one version talks to the holder another started.
 */
import * as v from "valibot";

/** Version of the protocol; a holder answers `list` with it. */
export const PROTOCOL = 1;

const name = v.pipe(v.string(), v.minLength(1), v.maxLength(4096));
const int = v.pipe(v.number(), v.integer(), v.minValue(0));

/** What a daemon asks. */
export const Request = v.variant("op", [
  /** Copy descriptor `fd` of process `pid` and keep it under `name` (replacing one of that name). */
  v.object({ op: v.literal("hold"), name, pid: int, fd: int }),
  /** Close the descriptor kept under `name`. */
  v.object({ op: v.literal("drop"), name }),
  /** Which descriptors are kept, by name, as numbers in the holder's process. */
  v.object({ op: v.literal("list") }),
]);
export type Request = v.InferOutput<typeof Request>;

/** What the holder answers. */
export const Reply = v.object({
  ok: v.boolean(),
  error: v.optional(v.string()),
  protocol: v.optional(int),
  pid: v.optional(int),
  fds: v.optional(v.array(v.object({ name, fd: int }))),
});
export type Reply = v.InferOutput<typeof Reply>;
