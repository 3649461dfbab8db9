#!/usr/bin/env bash
# `make test`: set up (scripts/setup.sh), start the services the integration tests use (a
# private dockerd, a docker-registry on 127.0.0.1, PostgreSQL), run ruff, mypy and every test, and stop
# what was started, whatever happens. PYTEST_ARGS passes options to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export BAKE_SERVICES="${BAKE_SERVICES:-$PWD/.bake/services}"
export PACKER_TMP_DIR="${PACKER_TMP_DIR:-$PWD/.bake/packer-tmp}"
export CHECKPOINT_DISABLE=1
mkdir -p "$PACKER_TMP_DIR"
# shellcheck source=services.sh
. scripts/services.sh
trap stop_services EXIT
start_dockerd
start_registry
start_postgres

ruff check bake tests bench
ruff format --check bake tests bench
mypy
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of options
python3 -m pytest tests -q ${PYTEST_ARGS:-}
