"""Real parts for integration tests: a Docker engine, a state folder, baked example images.

The engine is the one at DOCKER_HOST (.ci/run starts a private dockerd and exports it);
without one, bake's own engine logic starts a private dockerd (as root). Baking the
examples once per session keeps the suite within CI's time: later tests reuse the images
by bake key exactly as a second `bake build` would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake import docker, packer, process
from bake.build import BuildContext, BuildOptions, Outcome, bake
from bake.plan import Plan, plan_recipe
from bake.progress import PlainReporter
from bake.upstream import Upstream
from tests.conftest import RECIPES

LICENSE = "integration-test-license-value"


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"integration tests need {', '.join(missing)} (.ci/run installs them)")


@pytest.fixture(scope="session")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bake-state")


@pytest.fixture(scope="session")
def engine(state: Path) -> Iterator[docker.Engine]:
    require("docker", "packer")
    with docker.engine(process.run, state) as eng:
        yield eng


@pytest.fixture(scope="session")
def packer_info() -> packer.PackerInfo:
    require("packer")
    return packer.detect(process.run)


def environ(state: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["APP_LICENSE_KEY"] = LICENSE
    env.setdefault("PACKER_TMP_DIR", str(state / "packer-tmp"))
    return env


@pytest.fixture(scope="session")
def context(engine: docker.Engine, state: Path) -> BuildContext:
    return BuildContext(
        runner=process.run,
        engine=engine,
        state=state,
        reporter=PlainReporter(),
        environ=environ(state),
    )


UPSTREAM = Upstream()  # as the CLI does: the mirror's state is a bake input


def plan_of(path: Path, info: packer.PackerInfo, **kw: object) -> Plan:
    """A docker plan exactly as `bake build` makes it (so CLI runs reuse these bakes)."""
    (p,) = plan_recipe(path, info, targets=["docker"], upstream=UPSTREAM, **kw)  # type: ignore[arg-type]  # kwargs pass through
    return p


@pytest.fixture(scope="session")
def baked_web(context: BuildContext, packer_info: packer.PackerInfo) -> Outcome:
    """debian-base (bootstrapped with mmdebstrap) and web, baked and verified for real."""
    require("mmdebstrap")
    return bake(context, plan_of(RECIPES / "web.yaml", packer_info), BuildOptions())
