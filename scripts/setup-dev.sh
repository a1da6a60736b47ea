#!/usr/bin/env bash
# Installs everything the test suite needs on Debian bookworm (as root). Idempotent and quick
# when everything is already there. Debian packages only; JavaScript comes from `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  containerd runc docker-registry   # the real containerd 1.6, runtime and OCI registry
  attr                              # getfattr/setfattr for xattr checks on FUSE mounts
  busybox-static                    # test images are built from it
  apache2-utils                     # htpasswd for the basic-auth registry tests
  zstd kmod fuse3 libfuse2 openssl curl iproute2 e2fsprogs xfsprogs file
  chromium                          # headless: the admin status page is rendered in a real browser
  qemu-user-static                  # runs the arm64 binary in scripts/smoke-binary.sh
  libc6:arm64 libstdc++6:arm64      # what the arm64 binary links (multiarch, added below)
)
# The arm64 libraries come from Debian's multiarch: the architecture must be known to dpkg first.
dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -qq; }
# kubectl checks the test Kubernetes API server (test/_kube_api.ts); Debian's package is
# kubernetes-client. A kubectl already installed from elsewhere serves as well.
command -v kubectl >/dev/null 2>&1 || DEB_PACKAGES+=(kubernetes-client)
# A fresh Debian has no Node.js: npm is what installs Bun and Deno (from the npm registry).
command -v npm >/dev/null 2>&1 || DEB_PACKAGES+=(nodejs npm)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts the registry as a service on :5000 when it can; the tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

if [ ! -x node_modules/.bin/bun ] || [ ! -x node_modules/.bin/deno ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >/dev/null
fi
