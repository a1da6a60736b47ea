#!/bin/sh
# Installs stargz as containerd's stargz snapshotter and starts it.
#
#   curl -fsSL <release-url>/install.sh | sh              (downloads STARGZ_URL or the release binary)
#   sh install.sh                                         (from a checkout: builds dist/ if needed)
#
# What it does, idempotently: installs the binary as /usr/local/bin/stargz with the link
# /usr/local/bin/containerd-stargz-grpc (the Go daemon's name, so existing units keep working),
# writes the embedded default config to /etc/containerd-stargz-grpc/config.toml unless one exists,
# adds the `stargz` proxy plugin to /etc/containerd/config.toml, then starts the daemon (systemd
# unit stargz-snapshotter.service when systemd runs, a background process otherwise) and
# (re)starts containerd. Environment: STARGZ_BINARY (a local binary to install), STARGZ_URL.
set -eu

PREFIX=${PREFIX:-/usr/local}
CONFIG_DIR=/etc/containerd-stargz-grpc
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
SOCKET=/run/containerd-stargz-grpc/containerd-stargz-grpc.sock

say() { printf 'stargz-install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
case "$(uname -m)" in
  x86_64 | amd64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "please install: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. The binary.
here=$(cd "$(dirname "$0")" 2>/dev/null && pwd || echo /nonexistent)
tmpbin=""
if [ -n "${STARGZ_BINARY:-}" ]; then
  src=$STARGZ_BINARY
elif [ -f "$here/package.json" ] && [ -f "$here/compile.ts" ]; then
  src=$here/dist/stargz-linux-$ARCH
  if [ ! -x "$src" ]; then
    say "building $src from the checkout"
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    (cd "$here" && npm ci --no-audit --no-fund >/dev/null && node_modules/.bin/bun compile.ts >&2)
  fi
elif [ -n "${STARGZ_URL:-}" ]; then
  tmpbin=$(mktemp)
  say "downloading $STARGZ_URL"
  curl -fsSL "$STARGZ_URL" -o "$tmpbin" || die "download failed: $STARGZ_URL"
  src=$tmpbin
else
  die "no binary: set STARGZ_BINARY or STARGZ_URL, or run from a checkout"
fi
[ -f "$src" ] || die "missing binary $src"
install -m 0755 "$src" "$PREFIX/bin/stargz"
[ -z "$tmpbin" ] || rm -f "$tmpbin"
ln -sf stargz "$PREFIX/bin/containerd-stargz-grpc"
say "installed $("$PREFIX/bin/stargz" --version)"

# 2. The snapshotter config (kept when present, checked either way).
mkdir -p "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/config.toml" ]; then
  "$PREFIX/bin/stargz" config default >"$CONFIG_DIR/config.toml"
  say "wrote default $CONFIG_DIR/config.toml"
fi
"$PREFIX/bin/stargz" config check --config "$CONFIG_DIR/config.toml" || die "fix $CONFIG_DIR/config.toml"

# 3. containerd with the proxy plugin.
command -v containerd >/dev/null 2>&1 || apt_install containerd runc
mkdir -p "$(dirname "$CONTAINERD_CONFIG")"
if [ ! -s "$CONTAINERD_CONFIG" ]; then
  cat >"$CONTAINERD_CONFIG" <<TOML
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "stargz"
  disable_snapshot_annotations = false

[proxy_plugins]
  [proxy_plugins.stargz]
    type = "snapshot"
    address = "$SOCKET"
TOML
  say "wrote $CONTAINERD_CONFIG"
elif ! grep -q 'proxy_plugins.stargz\]' "$CONTAINERD_CONFIG"; then
  cat >>"$CONTAINERD_CONFIG" <<TOML

[proxy_plugins.stargz]
  type = "snapshot"
  address = "$SOCKET"
TOML
  say "added the stargz proxy plugin to $CONTAINERD_CONFIG"
  say "for Kubernetes, also set snapshotter = \"stargz\" and disable_snapshot_annotations = false in its CRI section"
fi

# 4. Start the daemon, then containerd.
if [ -d /run/systemd/system ]; then
  cat >/etc/systemd/system/stargz-snapshotter.service <<UNIT
[Unit]
Description=stargz snapshotter (lazy eStargz layers for containerd)
After=network.target
Before=containerd.service

[Service]
# READY=1 once the socket serves, STOPPING=1 on shutdown (sd_notify from the main process).
Type=notify
NotifyAccess=main
ExecStart=$PREFIX/bin/containerd-stargz-grpc --log-level=info --config=$CONFIG_DIR/config.toml
Restart=always
RestartSec=1
# Running containers keep their layers across restarts because "stargz fd-holder", started by
# the daemon, keeps every FUSE connection open: stopping or restarting the unit signals only the
# daemon (see docs/operations.md, "Restart and upgrade").
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now stargz-snapshotter.service
  systemctl restart stargz-snapshotter.service
  systemctl restart containerd.service
else
  pkill -TERM -x containerd-stargz-grpc 2>/dev/null && sleep 1 || true
  mkdir -p /var/log
  setsid "$PREFIX/bin/containerd-stargz-grpc" --log-level=info --config="$CONFIG_DIR/config.toml" \
    </dev/null >>/var/log/stargz-snapshotter.log 2>&1 &
  if ! pgrep -x containerd >/dev/null 2>&1; then
    setsid containerd --config "$CONTAINERD_CONFIG" </dev/null >>/var/log/containerd.log 2>&1 &
  else
    say "containerd is already running: restart it to load the proxy plugin"
  fi
fi
i=0
while [ ! -S "$SOCKET" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$SOCKET" ] || die "the daemon did not start (see /var/log/stargz-snapshotter.log or journalctl -u stargz-snapshotter)"
say "stargz is serving on $SOCKET; try: ctr plugins ls | grep stargz"
