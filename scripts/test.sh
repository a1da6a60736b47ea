#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test under Bun and under Deno,
# and ends with one line "N passed, N failed". Extra arguments select test files.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

BIN=node_modules/.bin
if (($#)); then FILES=("$@"); else mapfile -t FILES < <(find src test -name '*.test.ts' | sort); fi
LOGDIR=$(mktemp -d /tmp/stargz-test.XXXXXX)
passed=0 failed=0 status=0

echo "== lint and format"
if ! "$BIN/deno" lint --quiet || ! "$BIN/deno" fmt --check --quiet; then
  failed=$((failed + 1)); status=1
else
  passed=$((passed + 1))
fi

echo "== bun test (${#FILES[@]} files)"
"$BIN/bun" test --timeout 600000 "${FILES[@]/#/./}" 2>&1 | tee "$LOGDIR/bun.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
bp=$(grep -E '^ *[0-9]+ pass$' "$LOGDIR/bun.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
bf=$(grep -E '^ *[0-9]+ fail$' "$LOGDIR/bun.log" | tail -1 | grep -oE '[0-9]+' || echo 0)

echo "== deno test (${#FILES[@]} files)"
"$BIN/deno" test -A --no-check=remote "${FILES[@]}" 2>&1 | tee "$LOGDIR/deno.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$LOGDIR/deno.log" | grep -E '^(ok|FAILED) \|' | tail -1)
# Deno counts describe() blocks as tests and their it() cases as steps: count both.
num() { grep -oE "[0-9]+ $1" <<<"$2" | awk '{s+=$1} END {print s+0}'; }
dp=$(( $(num passed "$summary") + $(num 'steps' "$(grep -oE 'passed \([0-9]+ steps\)' <<<"$summary")") ))
df=$(( $(num failed "$summary") + $(num 'steps' "$(grep -oE 'failed \([0-9]+ steps\)' <<<"$summary")") ))

echo "bun: ${bp} passed, ${bf} failed; deno: ${dp} passed, ${df} failed"
passed=$((passed + bp + dp)); failed=$((failed + bf + df))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "${passed} passed, ${failed} failed"
exit "$status"
