"""Verify a container image in a FRESH container of it, never the build container.

A new container starts from the final image (as a deployer would run it: its own
entrypoint when it has one, else kept alive with `sleep`), the generated checks run with
testinfra's docker backend, and the container is removed whatever happens.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Sequence
from pathlib import Path

from bake.errors import VerifyError
from bake.infra.process import Runner
from bake.recipe.models import Check
from bake.targets.docker import engine as docker
from bake.targets.docker.engine import Engine
from bake.verify.run import VerifyReport, run_module, write_module

VERIFY_LABEL = "io.bake.verify"
METHOD = "fresh-container"


def verify_container_image(
    runner: Runner,
    eng: Engine,
    image: str,
    recipe: str,
    checks: Sequence[Check],
    folder: Path,
    *,
    own_entrypoint: bool,
) -> VerifyReport:
    """Start a fresh container of `image`, run the checks, remove the container."""
    start = time.monotonic()
    module, tests = write_module(recipe, checks, folder)
    junit = folder / "junit.xml"
    name = f"bake-verify-{recipe}-{pysecrets.token_hex(4)}"
    cid = ""
    try:
        if own_entrypoint:
            cid = docker.run_detached(runner, eng, image, name, labels={VERIFY_LABEL: recipe})
        else:
            cid = docker.run_detached(
                runner,
                eng,
                image,
                name,
                entrypoint="sleep",
                args=("infinity",),
                labels={VERIFY_LABEL: recipe},
            )
        results = run_module(runner, eng.env, f"bake-docker://root@{cid}", module, tests)
        if not results or not all(r.outcome in ("passed", "skipped") for r in results):
            _still_running(runner, eng, image, cid)  # a container that exited says so first
    finally:
        # by name: `docker run` can create the container and then fail to start it
        docker.remove_container(runner, eng, cid or name)
    ok = bool(results) and all(r.outcome in ("passed", "skipped") for r in results)
    if not checks:
        ok = True
    return VerifyReport(
        ok=ok,
        results=tuple(results),
        junit=str(junit),
        instance=f"docker://{name}",
        method="fresh-container",
        seconds=time.monotonic() - start,
    )


def _still_running(runner: Runner, eng: Engine, image: str, cid: str) -> None:
    state = docker.container_state(runner, eng, cid)
    if not state.get("Running"):
        logs = runner(eng.call("logs", "--tail", "30", "--", cid, check=False))
        raise VerifyError(
            f"a fresh container of {image} exited (exit {state.get('ExitCode')}):\n"
            + "\n".join("  | " + line for line in (logs.stdout + logs.stderr).splitlines()[-30:]),
            "the image's ENTRYPOINT/CMD must keep running for verification",
        )
