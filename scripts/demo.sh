#!/usr/bin/env bash
# `make demo`: on a fresh machine, install what is missing, start a Docker engine, bake the
# example recipes into the embedded registry dir:./registry, promote them to `stable`, and
# resolve web@stable to a verified digest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# shellcheck source=services.sh
. scripts/services.sh
trap stop_services EXIT
start_dockerd

export PACKER_TMP_DIR="$PWD/.bake/packer-tmp" && mkdir -p "$PACKER_TMP_DIR"
export BAKE_REGISTRY="dir:$PWD/registry"
if [ ! -e registry/metadata/1.root.json ]; then
  # a new registry is made here: what this machine trusted of an earlier one at this path
  # (a `make demo` before `rm -rf registry`) belongs to another repository
  python3 -c 'import os, shutil, sys
from bake.registry.updater import cache_dir, state_base
shutil.rmtree(cache_dir(state_base(os.environ), sys.argv[1]), ignore_errors=True)' "$BAKE_REGISTRY"
fi
key=.bake/keys/demo
[ -f "$key.key" ] || bake keygen --out "$key"
export BAKE_SIGNING_KEY="$PWD/$key.key" BAKE_TRUST="$PWD/$key.pub"
export APP_LICENSE_KEY="${APP_LICENSE_KEY:-demo-license-key}"

for recipe in debian-base web app; do
  echo "== bake build recipes/$recipe.yaml --registry $BAKE_REGISTRY"
  bake build "recipes/$recipe.yaml"
done
for name in debian-base web app; do
  bake promote "$name@latest" stable
done
echo
bake ls
echo
echo "== bake resolve web@stable"
bake resolve web@stable
echo
echo "== the same, trusting the registry's root.json (what a deployer is handed)"
bake keys show --root-out .bake/root.json
bake resolve web@stable --trust .bake/root.json --format env
