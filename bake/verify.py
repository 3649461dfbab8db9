"""Run an image's verify checks with pytest + testinfra against a FRESH instance of it.

Never the build container: we start a new container from the final image (as a deployer
would), run the generated pytest module with testinfra's docker backend, read the JUnit
XML, and remove the container whatever happens.
"""

from __future__ import annotations

import secrets as pysecrets
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bake import checks as checkgen
from bake import docker
from bake.docker import Engine
from bake.errors import VerifyError
from bake.process import Call, Runner
from bake.recipe.models import Check

PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"
VERIFY_LABEL = "io.bake.verify"


@dataclass(frozen=True)
class CheckResult:
    test: str
    title: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    results: tuple[CheckResult, ...]
    junit: str
    instance: str
    method: str
    seconds: float

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome not in ("passed", "skipped")]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "method": self.method,
            "instance": self.instance,
            "seconds": round(self.seconds, 3),
            "junit": self.junit,
            "passed": sum(r.outcome == "passed" for r in self.results),
            "failed": len(self.failed),
            "results": [r.__dict__ for r in self.results],
        }


def pytest_argv(module: Path, hosts: str, junit: Path, python: str = sys.executable) -> tuple[str, ...]:
    return (
        python,
        "-m",
        "pytest",
        "-c",
        str(module.parent / "pytest.ini"),
        "--rootdir",
        str(module.parent),
        "-q",
        "-rN",
        "--tb=line",
        "-p",
        "testinfra",
        f"--hosts={hosts}",
        f"--junitxml={junit}",
        str(module),
    )


def parse_junit(path: Path, tests: Sequence[checkgen.GeneratedTest]) -> list[CheckResult]:
    outcome: dict[str, tuple[str, str]] = {}
    if path.is_file():
        root = ET.parse(path).getroot()  # noqa: S314 - our own pytest's output, not untrusted XML
        for case in root.iter("testcase"):
            name = case.get("name", "").split("[", 1)[0]
            result = ("passed", "")
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    text = (node.get("message") or node.text or "").strip()
                    result = ({"failure": "failed"}.get(tag, tag), text[:2000])
            outcome[name] = result
    return [CheckResult(t.name, t.title, *outcome.get(t.name, ("error", "did not run"))) for t in tests]


def write_module(
    recipe: str, checks: Sequence[Check], folder: Path
) -> tuple[Path, list[checkgen.GeneratedTest]]:
    folder.mkdir(parents=True, exist_ok=True)
    text, tests = checkgen.generate(recipe, checks)
    module = folder / "test_verify.py"
    module.write_text(text, encoding="utf-8")
    (folder / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    return module, tests


def run_module(
    runner: Runner,
    env: Mapping[str, str],
    hosts: str,
    module: Path,
    tests: Sequence[checkgen.GeneratedTest],
    extra_args: Sequence[str] = (),
) -> list[CheckResult]:
    """Run a written verify module against `hosts` (any testinfra backend URL)."""
    junit = module.parent / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = (*pytest_argv(module, hosts, junit)[:-1], *extra_args, str(module))
    result = runner(Call(argv=argv, env=dict(env), cwd=module.parent, check=False, timeout=1800))
    if not junit.is_file() and result.returncode != 0:
        raise VerifyError(
            f"pytest could not run the checks (exit {result.returncode}):\n"
            + "\n".join("  | " + x for x in (result.stdout + result.stderr).splitlines()[-20:])
        )
    return parse_junit(junit, tests)


def run_checks(
    runner: Runner,
    env: Mapping[str, str],
    hosts: str,
    recipe: str,
    checks: Sequence[Check],
    folder: Path,
    extra_args: Sequence[str] = (),
) -> VerifyReport:
    """The checks against an instance that already runs (a live container, a VM over SSH)."""
    start = time.monotonic()
    module, tests = write_module(recipe, checks, folder)
    results = run_module(runner, env, hosts, module, tests, extra_args) if checks else []
    ok = all(r.outcome in ("passed", "skipped") for r in results)
    return VerifyReport(
        ok=ok,
        results=tuple(results),
        junit=str(module.parent / "junit.xml"),
        instance=hosts,
        method="live-instance",
        seconds=time.monotonic() - start,
    )


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
        time.sleep(0.3)
        state = docker.container_state(runner, eng, cid)
        if not state.get("Running"):
            logs = runner(eng.call("logs", "--tail", "30", cid, check=False))
            raise VerifyError(
                f"a fresh container of {image} exited at once (exit {state.get('ExitCode')}):\n"
                + "\n".join("  | " + line for line in (logs.stdout + logs.stderr).splitlines()[-30:]),
                "the image's ENTRYPOINT/CMD must keep running for verification",
            )
        results = run_module(runner, eng.env, f"docker://root@{cid}", module, tests)
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
