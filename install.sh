#!/bin/sh
# Installs stargz as containerd's stargz snapshotter and starts it (as root).
#
#   curl -fsSL https://github.com/stargz-ts/stargz/releases/latest/download/install.sh | sh
#   curl -fsSL …/install.sh | sh -s -- --kubernetes     (flags when piped)
#   sh install.sh                                       (from a checkout: builds dist/ if needed)
#   sh install.sh --uninstall [--purge]
#
# Piped (not run as a file inside a checkout), it downloads stargz-linux-<arch>.gz and SHA256SUMS
# from $STARGZ_RELEASE_URL, checks the sha256 of the .gz and of the unpacked binary against
# SHA256SUMS (a mismatch aborts before anything is installed) and never looks at the directory it
# runs in. Run as a file inside a checkout, it installs that checkout's dist/ build.
#
# Then, idempotently: the binary as $PREFIX/bin/stargz with the link containerd-stargz-grpc (the
# Go daemon's name, so existing units keep working); the embedded default config unless one
# exists; the `stargz` proxy plugin merged into containerd's config.toml (a TOML edit by the
# installed binary; --kubernetes also makes it CRI's snapshotter); a systemd unit, or a background
# process where systemd is absent. containerd is restarted only when its config changed, the
# daemon only when its binary or unit changed. A second run changes nothing.
#
# Flags: --kubernetes, --from-checkout, --uninstall, --purge (with --uninstall: also delete the
# config and the root with its cache).
# Environment (defaults in brackets; tests point all of them at private paths):
#   STARGZ_RELEASE_URL  release download base [https://github.com/stargz-ts/stargz/releases/latest/download,
#                       or …/releases/download/$STARGZ_VERSION when STARGZ_VERSION is set]
#   STARGZ_BINARY       install this local binary instead of downloading or building
#   PREFIX [/usr/local]  STARGZ_CONFIG_DIR [/etc/containerd-stargz-grpc]
#   STARGZ_ROOT [/var/lib/containerd-stargz-grpc]
#   STARGZ_ADDRESS [/run/containerd-stargz-grpc/containerd-stargz-grpc.sock]
#   CONTAINERD_CONFIG [/etc/containerd/config.toml]
#   STARGZ_INIT [systemd when /run/systemd/system exists, else none]
#   STARGZ_UNIT_DIR [/etc/systemd/system]   STARGZ_LOG [/var/log/stargz-snapshotter.log]
#   STARGZ_CONTAINERD_RESTART  a shell command that restarts containerd [systemctl restart
#                       containerd; without systemd: start containerd if none runs]
set -eu

PROJECT_RELEASES=https://github.com/stargz-ts/stargz/releases
if [ -n "${STARGZ_VERSION:-}" ]; then
  RELEASE_URL=${STARGZ_RELEASE_URL:-$PROJECT_RELEASES/download/$STARGZ_VERSION}
else
  RELEASE_URL=${STARGZ_RELEASE_URL:-$PROJECT_RELEASES/latest/download}
fi
PREFIX=${PREFIX:-/usr/local}
CONFIG_DIR=${STARGZ_CONFIG_DIR:-/etc/containerd-stargz-grpc}
CONFIG=$CONFIG_DIR/config.toml
ROOT=${STARGZ_ROOT:-/var/lib/containerd-stargz-grpc}
ADDRESS=${STARGZ_ADDRESS:-/run/containerd-stargz-grpc/containerd-stargz-grpc.sock}
RUN_DIR=$(dirname "$ADDRESS")
PIDFILE=$RUN_DIR/stargz.pid
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
UNIT_DIR=${STARGZ_UNIT_DIR:-/etc/systemd/system}
UNIT=$UNIT_DIR/stargz-snapshotter.service
LOG=${STARGZ_LOG:-/var/log/stargz-snapshotter.log}
if [ -n "${STARGZ_INIT:-}" ]; then INIT=$STARGZ_INIT
elif [ -d /run/systemd/system ]; then INIT=systemd
else INIT=none; fi
BIN=$PREFIX/bin/stargz

say() { printf 'stargz-install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

uninstall=false purge=false kubernetes=false from_checkout=false
for arg in "$@"; do
  case $arg in
    --uninstall) uninstall=true ;;
    --purge) purge=true ;;
    --kubernetes) kubernetes=true ;;
    --from-checkout) from_checkout=true ;;
    *) die "unknown flag $arg (want --kubernetes, --from-checkout, --uninstall, --purge)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
case "$(uname -m)" in
  x86_64 | amd64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac

# Run as a file inside a checkout? Piped from curl, $0 is the shell ("sh"), not this script.
checkout=""
case $0 in
  *install.sh)
    if [ -f "$0" ]; then
      here=$(cd "$(dirname "$0")" && pwd)
      [ -f "$here/package.json" ] && [ -f "$here/compile.ts" ] && checkout=$here
    fi
    ;;
esac
if $from_checkout && [ -z "$checkout" ]; then die "--from-checkout: run this file inside a checkout"; fi

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "please install: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The sum SHA256SUMS lists for $1; fails when it lists none.
expected_sum() {
  awk -v f="$1" '$2 == f || $2 == "*" f { print $1; found = 1 } END { exit !found }' "$tmp/SHA256SUMS"
}
check_sum() { # file name in the release, local path
  want=$(expected_sum "$1") || die "SHA256SUMS lists no $1"
  got=$(sha256sum "$2" | cut -d' ' -f1)
  [ "$want" = "$got" ] || die "checksum mismatch for $1: SHA256SUMS says $want, the download is $got; nothing installed"
}

download_release() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
  name=stargz-linux-$ARCH
  say "downloading $RELEASE_URL/$name.gz"
  curl -fsSL "$RELEASE_URL/SHA256SUMS" -o "$tmp/SHA256SUMS" || die "download failed: $RELEASE_URL/SHA256SUMS"
  curl -fsSL "$RELEASE_URL/$name.gz" -o "$tmp/$name.gz" || die "download failed: $RELEASE_URL/$name.gz"
  check_sum "$name.gz" "$tmp/$name.gz"
  gzip -dc "$tmp/$name.gz" >"$tmp/$name" || die "$name.gz does not unpack"
  check_sum "$name" "$tmp/$name"
  src=$tmp/$name
}

build_checkout() {
  src=$checkout/dist/stargz-linux-$ARCH
  # Rebuilt when missing or older than the sources: this checkout is what gets installed.
  if [ ! -x "$src" ] || [ -n "$(cd "$checkout" && find src compile.ts package.json -newer "$src" 2>/dev/null | head -n 1)" ]; then
    say "building $src from the checkout"
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    (cd "$checkout" && npm ci --no-audit --no-fund >/dev/null && node_modules/.bin/bun compile.ts >&2)
  fi
}

# The systemd unit, in one place. $1: the unit file to write.
write_unit() {
  cat >"$1" <<UNIT
[Unit]
Description=stargz snapshotter (lazy eStargz layers for containerd)
After=network.target
Before=containerd.service

[Service]
# READY=1 once the socket serves, STOPPING=1 on shutdown (sd_notify from the main process).
Type=notify
NotifyAccess=main
ExecStart=$PREFIX/bin/containerd-stargz-grpc --log-level=info --config=$CONFIG --root=$ROOT --address=$ADDRESS
Restart=always
RestartSec=1
# Running containers keep their layers across restarts because "stargz fd-holder", started by
# the daemon, keeps every FUSE connection open: stopping or restarting the unit signals only the
# daemon (see docs/operations.md, "Restart and upgrade").
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
}

background_running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

stop_background() {
  background_running || { rm -f "$PIDFILE"; return 0; }
  pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  rm -f "$PIDFILE"
}

start_background() {
  mkdir -p "$RUN_DIR" "$(dirname "$LOG")"
  setsid "$PREFIX/bin/containerd-stargz-grpc" --log-level=info --config="$CONFIG" --root="$ROOT" \
    --address="$ADDRESS" </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
}

# The fd holder keeps the layers' FUSE connections open across daemon restarts: uninstalling ends
# them. Removing its socket makes it exit; the dead mounts under the root are then detached.
release_layers() {
  [ -d "$ROOT" ] || return 0
  holder="fd-holder --socket $ROOT/fd-holder.sock"
  rm -f "$ROOT/fd-holder.sock"
  i=0
  while pgrep -f "$holder" >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  pkill -KILL -f "$holder" 2>/dev/null || true
  awk -v r="$ROOT/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mp; do umount -l "$mp" 2>/dev/null || true; done
}

restart_containerd() {
  if [ -n "${STARGZ_CONTAINERD_RESTART:-}" ]; then
    say "restarting containerd"
    sh -c "$STARGZ_CONTAINERD_RESTART" || die "restarting containerd failed"
  elif [ "$INIT" = systemd ]; then
    say "restarting containerd"
    systemctl restart containerd.service
  elif ! pidof containerd >/dev/null 2>&1; then
    say "starting containerd"
    setsid containerd --config "$CONTAINERD_CONFIG" </dev/null >>/var/log/containerd.log 2>&1 &
  else
    say "containerd is running without systemd: restart it to load its new config"
  fi
}

containerd_config() { # add|remove [flags]; prints changed|unchanged
  mkdir -p "$(dirname "$CONTAINERD_CONFIG")"
  "$BIN" install-helper containerd-config "$@" --file "$CONTAINERD_CONFIG" --address "$ADDRESS"
}

if $uninstall; then
  if [ "$INIT" = systemd ] && [ -f "$UNIT" ]; then
    systemctl disable --now stargz-snapshotter.service || true
    rm -f "$UNIT"
    systemctl daemon-reload
  fi
  stop_background
  release_layers
  if [ -x "$BIN" ] && [ -f "$CONTAINERD_CONFIG" ] &&
    [ "$(containerd_config remove)" = changed ]; then
    say "removed the stargz plugin from $CONTAINERD_CONFIG"
    restart_containerd
  fi
  rm -f "$PREFIX/bin/containerd-stargz-grpc" "$BIN"
  if $purge; then
    rm -rf "$CONFIG_DIR" "$ROOT"
    say "removed $CONFIG_DIR and $ROOT"
  else
    say "kept $CONFIG_DIR and $ROOT (--purge deletes them)"
  fi
  say "uninstalled"
  exit 0
fi

# 1. The binary: from STARGZ_BINARY, the checkout, or the release.
if [ -n "${STARGZ_BINARY:-}" ]; then src=$STARGZ_BINARY
elif [ -n "$checkout" ]; then build_checkout
else download_release; fi
[ -f "$src" ] || die "missing binary $src"
restart_daemon=false
mkdir -p "$PREFIX/bin"
if ! cmp -s "$src" "$BIN" 2>/dev/null; then
  install -m 0755 "$src" "$BIN.new"
  mv -f "$BIN.new" "$BIN"
  restart_daemon=true
fi
[ "$(readlink "$PREFIX/bin/containerd-stargz-grpc" 2>/dev/null)" = stargz ] ||
  ln -sf stargz "$PREFIX/bin/containerd-stargz-grpc"
say "installed $("$BIN" --version | head -n 1)"

# 2. The snapshotter config (kept when present, checked either way).
mkdir -p "$CONFIG_DIR"
if [ ! -f "$CONFIG" ]; then
  "$BIN" config default >"$CONFIG"
  say "wrote the default $CONFIG"
fi
"$BIN" config check --config "$CONFIG" >/dev/null || die "fix $CONFIG"

# 3. containerd with the proxy plugin.
command -v containerd >/dev/null 2>&1 || apt_install containerd runc
if $kubernetes; then set -- add --kubernetes; else set -- add; fi
containerd_changed=$(containerd_config "$@") || die "could not edit $CONTAINERD_CONFIG"
[ "$containerd_changed" = unchanged ] || say "merged the stargz settings into $CONTAINERD_CONFIG"

# 4. The daemon, then containerd.
if [ "$INIT" = systemd ]; then
  mkdir -p "$UNIT_DIR"
  write_unit "$tmp/unit"
  if ! cmp -s "$tmp/unit" "$UNIT"; then
    cp "$tmp/unit" "$UNIT"
    systemctl daemon-reload
    restart_daemon=true
  fi
  systemctl enable --quiet stargz-snapshotter.service
  if $restart_daemon; then systemctl restart stargz-snapshotter.service
  else systemctl start stargz-snapshotter.service; fi
else
  if $restart_daemon || ! background_running; then
    stop_background
    start_background
    restart_daemon=true
  fi
fi
i=0
while [ ! -S "$ADDRESS" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$ADDRESS" ] || die "the daemon did not start (see $LOG or journalctl -u stargz-snapshotter)"
if [ "$containerd_changed" = changed ]; then restart_containerd
elif [ "$INIT" = systemd ] && ! systemctl is-active --quiet containerd.service; then
  systemctl start containerd.service
fi
if ! $restart_daemon && [ "$containerd_changed" = unchanged ]; then say "already installed: nothing changed"; fi
say "stargz is serving on $ADDRESS; try: stargz status"
