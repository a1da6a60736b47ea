#!/usr/bin/env bash
# install.sh with systemd, on a fresh Debian: boots a debootstrap'ed bookworm (containerd, runc,
# curl) with `systemd-nspawn --boot`, serves dist/ (the release set from compile.ts) on a local
# port, and inside the container runs `curl … | sh`, then checks: both units active, the plugin
# in `ctr plugins ls`, a second run changes nothing (same main pids), `--kubernetes` plus a lazy
# CRI pull whose layers containerd never downloads, and `--uninstall` leaving containerd active
# without the plugin; and, with the unit install.sh wrote, a reader that keeps reading a lazy
# layer through `systemctl restart`, a SIGKILL of the main process (Restart=always) and a 20 s
# stop (scripts/_nspawn_restart.ts: READY=1, fd holder, no stale mounts, systemd-analyze
# verify, rpull + ctr run). As root; needs systemd-container and debootstrap (apt-get install them).
# Not part of CI: the first debootstrap downloads ~150 MB (cached in $NSPAWN_CACHE afterwards).
# runc cannot create cgroups inside such a container here (read-only cgroup v1), so the lazy
# layer is read through its mount instead of by `ctr run`.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${NSPAWN_CACHE:-/var/tmp/stargz-nspawn-bookworm}
[ -f dist/SHA256SUMS ] || node_modules/.bin/bun compile.ts
if [ ! -x "$CACHE/usr/bin/containerd" ]; then
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,containerd,runc,curl,ca-certificates,fuse3,kmod \
    bookworm "$CACHE" http://deb.debian.org/debian
fi
work=$(mktemp -d /tmp/stargz-nspawn.XXXXXX)
cp -a "$CACHE" "$work/root"
echo stargz-nspawn >"$work/root/etc/hostname"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
  rm -rf "$work"
}
trap cleanup EXIT
python3 -m http.server 0 --bind 127.0.0.1 --directory dist >"$work/http.log" 2>&1 &
pids+=($!)
# --keep-unit/--register=no: the host runs no systemd to hand a scope or a machine name to.
# --system-call-filter=pidfd_getfd: nspawn's default seccomp filter (systemd 252) denies it with
# EPERM to the container's services, and without it the fd holder cannot take the daemon's FUSE
# descriptors: every restart would break the layers (measured: all reads then fail with
# "Transport endpoint is not connected").
systemd-nspawn -q --boot --register=no --keep-unit -D "$work/root" --bind=/dev/fuse \
  --system-call-filter=pidfd_getfd \
  >"$work/boot.log" 2>&1 </dev/null &
nspawn=$!
pids=("$nspawn" "${pids[@]}")
for _ in $(seq 300); do
  init=$(ps -o pid= --ppid "$nspawn" | head -n 1 | tr -d ' ' || true)
  [ -n "$init" ] && nsenter -t "$init" -a -- systemctl is-system-running --quiet 2>/dev/null && break
  sleep 0.2
done
[ -n "$init" ] || { cat "$work/boot.log"; exit 1; }
port=$(grep -o 'port [0-9]*' "$work/http.log" | cut -d' ' -f2)
url=http://127.0.0.1:$port
inside() { nsenter -t "$init" -a -- /bin/sh -c "$1"; }
passed=0 failed=0
check() {
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}
mainpids() { inside "systemctl show -p MainPID --value stargz-snapshotter containerd | tr '\n' ' '"; }

t0=$(date +%s%N)
check "curl | sh installs" inside "curl -fsSL $url/install.sh | STARGZ_RELEASE_URL=$url sh"
echo "install took $((($(date +%s%N) - t0) / 1000000)) ms"
check "units active" inside "systemctl is-active --quiet stargz-snapshotter containerd"
check "ctr plugins ls lists stargz ok" inside "ctr plugins ls | grep -Eq 'snapshotter.v1 +stargz +- +ok'"
check "stargz status answers" inside "stargz status | grep -q '^config /etc/containerd-stargz-grpc/config.toml'"
before=$(mainpids)
check "second run changes nothing" inside "curl -fsSL $url/install.sh | STARGZ_RELEASE_URL=$url sh 2>&1 | grep -q 'nothing changed'"
check "same main pids after the second run" test "$before" = "$(mainpids)"
check "--kubernetes" inside "curl -fsSL $url/install.sh | STARGZ_RELEASE_URL=$url sh -s -- --kubernetes"
check "restarts under systemd (scripts/_nspawn_restart.ts)" \
  node_modules/.bin/bun scripts/_nspawn_restart.ts "$init"
check "lazy CRI pull and read" node_modules/.bin/bun scripts/_nspawn_lazy.ts "$init"
check "--uninstall" inside "curl -fsSL $url/install.sh | sh -s -- --uninstall"
check "containerd active without the plugin" inside \
  "systemctl is-active --quiet containerd && ! systemctl is-active --quiet stargz-snapshotter && ! ctr plugins ls | grep -q stargz && ctr plugins ls | grep -Eq 'overlayfs +linux/[a-z0-9]+ +ok'"
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
