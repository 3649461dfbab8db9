#!/usr/bin/env bash
# Install what bake and its tests need on a fresh Debian 12 machine (as root), once:
# Debian packages that are missing, then bake itself with its development tools.
# Run by `make test` and `make demo`; safe to run again (it installs only what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  packer docker.io mmdebstrap skopeo docker-registry    # bakes, images, the test registry
  qemu-utils qemu-system-x86 openssh-client e2fsprogs   # VM images (-t qemu)
  postgresql                                            # the fleet's metadata store (tests)
  openssl curl ca-certificates git make
  chromium                                              # catalog pages, checked in a real browser
)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "WARNING: Running pip as the 'root' user" || true
