# bake — common tasks. `make demo` and `make test` are the two a new user needs.
PYTHON ?= python3
PYTEST_ARGS ?=
export PACKER_TMP_DIR ?= $(CURDIR)/.bake/packer-tmp
export CHECKPOINT_DISABLE = 1

.PHONY: help setup install lint typecheck unit integration test demo bench clean schema

help:
	@echo "make demo   - set up, bake the example recipes into dir:./registry, resolve web@stable"
	@echo "make test   - set up, then ruff, mypy --strict, unit and integration tests"
	@echo "make lint   - ruff + mypy only"
	@echo "make bench  - benchmarks (ratios against baselines measured in the same run)"

setup:
	bash scripts/setup.sh

install: setup

lint:
	ruff check bake tests bench
	ruff format --check bake tests bench
	mypy

typecheck: lint

unit:
	$(PYTHON) -m pytest tests/unit -q $(PYTEST_ARGS)

integration:
	mkdir -p $(PACKER_TMP_DIR)
	$(PYTHON) -m pytest tests/integration -q -m integration $(PYTEST_ARGS)

# sets itself up: packages, a private dockerd and a registry (stopped after), lint, every test
test:
	PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh

schema:
	$(PYTHON) -m bake schema > bake-recipe.schema.json

demo:
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh

clean:
	rm -rf .bake build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
