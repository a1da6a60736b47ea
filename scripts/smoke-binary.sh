#!/usr/bin/env bash
# Builds both executables and smoke-tests the amd64 one: version, the containerd-stargz-grpc link
# name, and `serve` on a temporary root and socket that comes up and exits 0 on SIGTERM within 3 s.
# Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

check "compile both binaries" node_modules/.bin/bun compile.ts
BIN=dist/stargz-linux-amd64
check "arm64 binary is an aarch64 ELF" bash -c 'file dist/stargz-linux-arm64 | grep -q "ARM aarch64"'
check "SHA256SUMS matches" bash -c 'cd dist && sha256sum -c --quiet SHA256SUMS'
check "--version" bash -c "$BIN --version | grep -qE '^stargz [0-9]+\.[0-9]+\.[0-9]+ [0-9a-f]{7,}'"

tmp=$(mktemp -d /tmp/stargz-smoke.XXXXXX)
serve_check() {
  # Run from an empty directory so nothing can be read from the source tree.
  ln -s "$PWD/$BIN" "$tmp/containerd-stargz-grpc"
  (cd "$tmp" && exec ./containerd-stargz-grpc --root "$tmp/root" --address "$tmp/run/s.sock" 2>"$tmp/log") &
  local pid=$! i
  for i in $(seq 100); do [ -S "$tmp/run/s.sock" ] && break; sleep 0.1; done
  [ -S "$tmp/run/s.sock" ] || { cat "$tmp/log"; kill -9 $pid; return 1; }
  local t0=$(date +%s%N)
  kill -TERM $pid; wait $pid; local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "serve exited $rc after SIGTERM in ${ms} ms"
  [ $rc -eq 0 ] && [ $ms -lt 3000 ] && [ ! -e "$tmp/run/s.sock" ]
}
check "serve comes up and stops on SIGTERM" serve_check
rm -rf "$tmp"

# The compiled binary must do what the source does: the daemon end-to-end suites against it.
check "end-to-end suites against the compiled binary" env STARGZ_TEST_BINARY="$PWD/$BIN" \
  node_modules/.bin/bun test --timeout 600000 ./test/lazy_pull.test.ts ./test/snapshotter.test.ts \
    ./test/restart.test.ts
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
