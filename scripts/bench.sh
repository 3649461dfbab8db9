#!/usr/bin/env bash
# `make bench`: every benchmark in bench/, each printing a ratio against a baseline
# measured in the same run. Needs what `make demo` needs (it starts a private dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck source=services.sh
. scripts/services.sh
trap stop_services EXIT
start_dockerd
export PACKER_TMP_DIR="$PWD/.bake/packer-tmp" && mkdir -p "$PACKER_TMP_DIR"

echo "== digest throughput: bake vs openssl dgst -sha256 (1 GiB)"
python3 bench/digest_bench.py
echo "== bake resolve latency: dir: registry, 1,000 images x 20 versions"
python3 bench/resolve_bench.py
echo "== bake catalog: 1,000 images x 20 versions, against bake ls --json"
python3 bench/catalog_bench.py
echo "== bake build overhead over packer build"
python3 bench/overhead_bench.py
echo "== nightly graph: no-op rebuild ratio and -j2 speed-up"
python3 bench/graph_bench.py
echo "== a fresh runner bakes a changed child of a published parent, vs rebaking the parent"
python3 bench/fleet_bench.py
echo "== drift check vs find -exec sha256sum"
python3 bench/drift_bench.py
if [ -f bench/vm_bench.py ] && command -v qemu-system-x86_64 >/dev/null; then
  echo "== VM bake phases"
  python3 bench/vm_bench.py
fi
