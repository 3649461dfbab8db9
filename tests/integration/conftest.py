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
from dataclasses import dataclass
from pathlib import Path

import pytest

from bake.infra import packer, process
from bake.infra.upstream import Upstream
from bake.plan import Plan, plan_recipe
from bake.targets import loop
from bake.targets.base import BakeContext, BakeOptions, Outcome
from bake.targets.docker import Docker
from bake.targets.docker import engine as docker
from bake.targets.docker.session import DockerSession
from bake.ui.progress import PlainReporter
from tests.conftest import RECIPES
from tests.integration import postgres

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
def pg() -> Iterator[str]:
    """A real PostgreSQL server's libpq URL (BAKE_TEST_PG, or one started for the session)."""
    with postgres.server() as url:
        yield url


@pytest.fixture(scope="session")
def packer_info() -> packer.PackerInfo:
    require("packer")
    return packer.detect(process.run)


def environ(state: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["APP_LICENSE_KEY"] = LICENSE
    env.setdefault("PACKER_TMP_DIR", str(state / "packer-tmp"))
    return env


@dataclass(frozen=True)
class Bakes:
    """Docker bakes through the generic loop, in one engine and state folder."""

    ctx: BakeContext
    engine: docker.Engine

    @property
    def runner(self) -> process.Runner:
        return self.ctx.runner

    @property
    def state(self) -> Path:
        return self.ctx.state

    def bake(self, plan: Plan, opts: BakeOptions | None = None) -> Outcome:
        return loop.bake(
            Docker(), DockerSession(self.ctx, self.engine), self.ctx, plan, opts or BakeOptions()
        )


def bakes(engine: docker.Engine, state: Path) -> Bakes:
    ctx = BakeContext(runner=process.run, state=state, reporter=PlainReporter(), environ=environ(state))
    return Bakes(ctx, engine)


@pytest.fixture(scope="session")
def context(engine: docker.Engine, state: Path) -> Bakes:
    return bakes(engine, state)


UPSTREAM = Upstream()  # as the CLI does: the mirror's state is a bake input


def plan_of(path: Path, info: packer.PackerInfo, **kw: object) -> Plan:
    """A docker plan exactly as `bake build` makes it (so CLI runs reuse these bakes)."""
    (p,) = plan_recipe(path, info, targets=["docker"], upstream=UPSTREAM, **kw)  # type: ignore[arg-type]  # kwargs pass through
    return p


@pytest.fixture(scope="session")
def baked_web(context: Bakes, packer_info: packer.PackerInfo) -> Outcome:
    """debian-base (bootstrapped with mmdebstrap) and web, baked and verified for real."""
    require("mmdebstrap")
    return context.bake(plan_of(RECIPES / "web.yaml", packer_info))
