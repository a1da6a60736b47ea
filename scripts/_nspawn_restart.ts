/**
 * Host side of scripts/nspawn-install-check.sh, the restart part (issue #13 under a real
 * systemd): with the unit install.sh wrote, a reader inside the booted container keeps reading
 * a lazily mounted layer (a cached file, files not fetched yet, a directory listing, exec of a
 * static busybox that lives on the mount) while the unit is restarted, its main process is
 * SIGKILLed (Restart=always brings it back) and it is stopped for 20 s and started again.
 * Checks: no failed read, reads resume within 2 s of the unit being active again, `active`
 * only once the daemon sent READY=1, one fd holder, no stale mount, `systemd-analyze verify`,
 * and `stargz rpull` + `ctr run`. Prints one `ok`/`FAIL` line per check, exits 1 on a failure.
 * Usage: bun scripts/_nspawn_restart.ts <pid of the container's init>
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { criPull } from "../test/_cri.ts";
import {
  estargzLayer,
  makeBusyboxRoot,
  patternBytes,
  pushLayers,
  tarDir,
} from "../test/_images.ts";
import { startRegistry } from "../test/_registry.ts";

const run = promisify(execFile);
const init = process.argv[2];
const UNIT = "stargz-snapshotter";
const FILES = 2000;
const inside = async (cmd: string, timeout = 120_000) =>
  (await run("nsenter", ["-t", init, "-a", "--", "/bin/sh", "-c", cmd], { timeout })).stdout;
const tryInside = (cmd: string, timeout?: number) =>
  inside(cmd, timeout).then((out) => ({ ok: true, out }), (err) => ({
    ok: false,
    out: `${err.stdout ?? ""}${err.stderr ?? ""}${err.stdout || err.stderr ? "" : err.message}`,
  }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowNs = () => BigInt(Date.now()) * 1_000_000n;
let failed = 0;
function check(name: string, ok: boolean, detail = ""): void {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  if (!ok) failed++;
}
const show = async (props: string) =>
  Object.fromEntries(
    (await inside(`systemctl show -p ${props} ${UNIT}`)).trim().split("\n").map((l) => {
      const i = l.indexOf("=");
      return [l.slice(0, i), l.slice(i + 1)];
    }),
  );
/** Polls the unit until `active` (every 50 ms); the time it was first seen active. */
async function untilActive(): Promise<bigint> {
  for (;;) {
    const s = await show("ActiveState");
    if (s.ActiveState === "active") return nowNs();
    await sleep(50);
  }
}

const dir = fs.mkdtempSync("/tmp/stargz-nspawn-restart-");
makeBusyboxRoot(path.join(dir, "bb"));
fs.mkdirSync(path.join(dir, "bb", "data"));
fs.writeFileSync(path.join(dir, "bb", "data", "cached"), "read before every restart\n");
// Files the reader reads for the first time one per round, most of them during or after the
// restarts (background fetch is off below, so each is fetched from the registry on that read).
for (let i = 0; i < FILES; i++) {
  fs.writeFileSync(path.join(dir, "bb", "data", `f${i}`), patternBytes(8192, i));
}
tarDir(path.join(dir, "bb"), path.join(dir, "bb.tar"));
const reg = await startRegistry();
try {
  const img = await pushLayers(reg, "nspawn/restart", "esgz", [
    await estargzLayer(path.join(dir, "bb.tar")),
  ], ["/bin/busybox", "echo", "hello from ctr run"]);

  // 3. The unit as written, verified by the systemd that runs it.
  const verify = await tryInside(`systemd-analyze verify /etc/systemd/system/${UNIT}.service 2>&1`);
  check("systemd-analyze verify", verify.ok && verify.out.trim() === "", verify.out.trim());

  // No background fetch: files stay unfetched until the reader reads them.
  await inside(
    "f=/etc/containerd-stargz-grpc/config.toml; grep -q '^no_background_fetch' $f || " +
      "sed -i '1i no_background_fetch = true' $f",
  );
  await inside(`systemctl restart ${UNIT}`);
  await criPull(`/proc/${init}/root/run/containerd/containerd.sock`, img.ref);
  const st = JSON.parse(await inside("stargz status --json"));
  const mnt: string = st.images.find((i: { ref: string }) => i.ref === img.ref).layers[0]
    .mountpoint;
  const layerCount = st.images.reduce(
    (n: number, i: { layers: unknown[] }) => n + i.layers.length,
    0,
  );

  // 2. The reader: a transient unit of the container's systemd, outside the daemon's cgroup.
  // ok is a string of one digit per access: 0 when it worked; errors go to /tmp/reads.err.
  const script = `i=0; exec 2>>/tmp/reads.err; while :; do
    t=$(date +%s%N)
    cat ${mnt}/data/cached >/dev/null; a=$?
    cat ${mnt}/data/f$((i % ${FILES})) >/dev/null; b=$?
    ls ${mnt}/data >/dev/null; c=$?
    [ "$(${mnt}/bin/busybox echo x)" = x ]; d=$?
    echo "$t $(date +%s%N) $a$b$c$d" >>/tmp/reads.log; i=$((i + 1)); sleep 0.05
  done`;
  await inside(
    "rm -f /tmp/reads.log /tmp/reads.err; systemctl stop stargz-reader 2>/dev/null; true",
  );
  await inside(`systemd-run -q --unit=stargz-reader /bin/sh -c '${script}'`);
  const rounds = () =>
    fs.readFileSync(`/proc/${init}/root/tmp/reads.log`, "utf8").trim().split("\n").map((l) => {
      const [start, end, ok] = l.split(" ");
      return { start: BigInt(start), end: BigInt(end), ok: ok === "0000", codes: ok };
    });
  /** Waits until `n` rounds have started after `t`. */
  const roundsAfter = async (t: bigint, n = 1) => {
    for (;;) {
      try {
        if (rounds().filter((r) => r.start > t).length >= n) return;
      } catch { /* no log yet */ }
      await sleep(100);
    }
  };

  await roundsAfter(nowNs(), 5);
  const pid0 = (await show("MainPID")).MainPID;

  /** Runs `op`, waits for the unit to be active again with another main pid, checks reads. */
  const event = async (name: string, op: () => Promise<void>): Promise<void> => {
    const before = (await show("MainPID")).MainPID;
    const t0 = nowNs();
    await op();
    const active = await untilActive();
    const after = (await show("MainPID")).MainPID;
    // Reads go on after the event: a few rounds before the next one.
    await roundsAfter(active, 5);
    const all = rounds().filter((r) => r.end > t0);
    const firstDone = all.find((r) => r.end > active);
    const resumeMs = firstDone ? Number(firstDone.end - active) / 1e6 : Infinity;
    const longest = all.reduce((m, r) => (r.end - r.start > m ? r.end - r.start : m), 0n);
    check(
      `${name}: new main pid, no failed read, reads resume within 2 s`,
      after !== before && after !== "0" && all.every((r) => r.ok) && resumeMs <= 2000,
      `pid ${before} -> ${after}, ${all.length} rounds, ${
        all.filter((r) => !r.ok).length
      } failed (codes ${
        [...new Set(all.filter((r) => !r.ok).map((r) => r.codes))].join(",")
      }), longest round ${Number(longest) / 1e6} ms, resumed ${resumeMs.toFixed(0)} ms ` +
        `after active`,
    );
  };

  await event("systemctl restart", () => inside(`systemctl restart ${UNIT}`).then(() => {}));
  await event("systemctl kill -s KILL (main) + Restart=always", async () => {
    await inside(`systemctl kill --kill-who=main -s KILL ${UNIT}`);
    // Until systemd noticed the death, the unit still reads active with the old pid.
    const old = (await show("MainPID")).MainPID;
    while ((await show("MainPID")).MainPID === old) await sleep(50);
  });
  // 1. With Type=notify the unit is `activating` while the daemon runs but has not said
  // READY=1, and the first time it reads `active` the daemon already answers.
  let sawActivating = false;
  let answeredWhenActive = false;
  await event("systemctl stop + 20 s + systemctl start", async () => {
    await inside(`systemctl stop ${UNIT}`);
    await sleep(20_000);
    await inside(`systemctl start --no-block ${UNIT}`);
    for (;;) {
      const s = await show("ActiveState,MainPID");
      if (s.ActiveState === "activating" && s.MainPID !== "0") sawActivating = true;
      if (s.ActiveState === "active") {
        answeredWhenActive = (await tryInside("stargz status >/dev/null", 5000)).ok;
        return;
      }
      await sleep(20);
    }
  });
  check(
    "Type=notify: activating while the daemon starts, active once it answers (READY=1)",
    sawActivating && answeredWhenActive,
    `saw activating with a main pid: ${sawActivating}; stargz status answered at active: ${answeredWhenActive}`,
  );
  const journal = await inside(`journalctl -b -u ${UNIT} -o cat --no-pager`);
  check(
    "no `cannot notify systemd` in the journal",
    !journal.includes("cannot notify systemd"),
  );
  const unheld = journal.split("\n").find((l) => l.includes("will not survive a restart"));
  check("every mount handed to the fd holder", unheld === undefined, unheld ?? "");
  await inside("systemctl stop stargz-reader");
  const errs = fs.readFileSync(`/proc/${init}/root/tmp/reads.err`, "utf8").trim();
  if (errs) console.log(`reader errors (first 5):\n${errs.split("\n").slice(0, 5).join("\n")}`);
  const all = rounds();
  console.log(
    `reader: ${all.length} rounds in total, ${all.filter((r) => !r.ok).length} failed; ` +
      `main pids ${pid0} -> ${(await show("MainPID")).MainPID}`,
  );

  const holders = (await inside(
    "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null; echo; done | grep -c '[f]d-holder' || true",
  )).trim();
  check("exactly one fd holder", holders === "1", `${holders} running`);
  const mounts = (await inside(
    "awk '$5 ~ \"^/var/lib/containerd-stargz-grpc/snapshots/\" {print $5}' /proc/self/mountinfo",
  )).trim().split("\n").filter(Boolean);
  const stale: string[] = [];
  for (const m of mounts) {
    if (!(await tryInside(`timeout 5 ls ${m} >/dev/null`, 10_000)).ok) stale.push(m);
  }
  check(
    "no stale mounts",
    stale.length === 0 && mounts.length === layerCount,
    `${mounts.length} mounts for ${layerCount} layers, ${stale.length} not answering`,
  );

  // 4. rpull + ctr run: the runtime, not the snapshotter, is what may not work in nspawn.
  // containerd may still be backing off from the daemon's 20 s absence (its gRPC reconnect
  // backoff, not ours): retry for a while and say how long it took.
  const tPull = Date.now();
  let pull = await tryInside(`stargz rpull --plain-http ${img.ref} 2>&1`, 120_000);
  while (!pull.ok && pull.out.includes("unavailable") && Date.now() - tPull < 60_000) {
    await sleep(1000);
    pull = await tryInside(`stargz rpull --plain-http ${img.ref} 2>&1`, 120_000);
  }
  console.log(`rpull: ${((Date.now() - tPull) / 1000).toFixed(1)} s until it succeeded or gave up`);
  check("stargz rpull --plain-http", pull.ok, pull.out.trim().split("\n").slice(-1)[0]);
  const ctr = await tryInside(
    `ctr run --rm --snapshotter stargz ${img.ref} nspawn-run 2>&1`,
    60_000,
  );
  console.log(
    `ctr run: ${ctr.ok ? "ran" : "failed"}: ${ctr.out.trim().split("\n").slice(-2).join(" | ")}`,
  );
  if (!ctr.ok) {
    await tryInside("ctr task rm -f nspawn-run; ctr container rm nspawn-run");
  }
} finally {
  await reg.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(failed === 0 ? 0 : 1);
