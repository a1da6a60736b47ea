#!/usr/bin/env bash
# Builds the release set and smoke-tests it: the amd64 binary's version, the containerd-stargz-grpc
# link name, `serve` on a temporary root and socket that comes up and exits 0 on SIGTERM within
# 3 s; the arm64 binary under qemu; install.sh piped from curl; the end-to-end suites.
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
check "release set complete" bash -c 'cd dist && for f in stargz-linux-amd64 stargz-linux-arm64 stargz-linux-amd64.gz stargz-linux-arm64.gz install.sh; do grep -q "  $f\$" SHA256SUMS || exit 1; done'
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

# The arm64 binary runs, not only builds: under qemu-user-static with Debian's multiarch libc
# (scripts/setup-dev.sh installs both): version, convert, verify, and a FUSE mount whose tree
# equals the tar it came from.
ARM=$PWD/dist/stargz-linux-arm64
arm64() { qemu-aarch64-static "$ARM" "$@"; }
arm_tmp=$(mktemp -d /tmp/stargz-arm64.XXXXXX)
arm64_check() {
  mkdir -p "$arm_tmp/tree/dir/sub" "$arm_tmp/mnt" "$arm_tmp/want"
  echo hello >"$arm_tmp/tree/dir/hello"
  head -c 300000 /dev/urandom >"$arm_tmp/tree/dir/sub/random"
  ln -s hello "$arm_tmp/tree/dir/link"
  tar -C "$arm_tmp/tree" -cf "$arm_tmp/layer.tar" dir
  arm64 --version | grep -qE '^stargz [0-9]+\.[0-9]+\.[0-9]+ ' || return 1
  arm64 convert "$arm_tmp/layer.tar" "$arm_tmp/layer.esgz" >/dev/null || return 1
  arm64 verify "$arm_tmp/layer.esgz" >/dev/null || return 1
  arm64 mount --no-background-fetch "$arm_tmp/layer.esgz" "$arm_tmp/mnt" 2>"$arm_tmp/mount.log" &
  local pid=$! i
  for i in $(seq 300); do mountpoint -q "$arm_tmp/mnt" && break; sleep 0.1; done
  mountpoint -q "$arm_tmp/mnt" || { cat "$arm_tmp/mount.log"; kill -9 $pid; return 1; }
  tar -C "$arm_tmp/want" -xf "$arm_tmp/layer.tar"
  diff -r --no-dereference "$arm_tmp/want/dir" "$arm_tmp/mnt/dir"; local rc=$?
  kill -TERM $pid; wait $pid
  return $rc
}
check "arm64 binary under qemu: --version, convert, verify, mount equals tar" arm64_check
mountpoint -q "$arm_tmp/mnt" && umount "$arm_tmp/mnt"
rm -rf "$arm_tmp"

# The release set installs with curl | sh (test/install.test.ts, given the compiled binary).
check "install.sh from the release set" env STARGZ_TEST_BINARY="$PWD/$BIN" \
  node_modules/.bin/bun test --timeout 600000 ./test/install.test.ts

# The compiled binary must do what the source does: the daemon end-to-end suites against it.
check "end-to-end suites against the compiled binary" env STARGZ_TEST_BINARY="$PWD/$BIN" \
  node_modules/.bin/bun test --timeout 600000 ./test/lazy_pull.test.ts ./test/snapshotter.test.ts \
  ./test/keychain_cri.test.ts ./test/keychain_daemon.test.ts ./test/rpull.test.ts \
  ./test/restart.test.ts
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
