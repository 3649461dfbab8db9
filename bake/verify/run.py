"""Run verify checks with pytest + testinfra against an instance, and read the results.

The checks become a generated pytest module (bake.verify.checks); pytest runs it with
testinfra's backend for the instance (docker://, ssh://) and writes JUnit XML, which gives
each check's outcome. Targets start the FRESH instance of their artifact (a container, a
booted VM) and call :func:`run_module`; `bake drift` runs the same against a live one.
"""

from __future__ import annotations

import shutil
import site
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from bake.errors import VerifyError
from bake.infra.process import Call, Runner
from bake.recipe.models import Check
from bake.verify import checks as checkgen

PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"
# Beside the checks: the bake-docker:// backend (one shell per container, see
# bake.verify.shell_backend), registered by the conftest; the child imports nothing of bake.
SHELL_BACKEND = "bake_shell_backend"
CONFTEST = f'''"""Written by bake: registers the bake-docker:// testinfra backend ({SHELL_BACKEND}.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testinfra.backend  # noqa: E402

testinfra.backend.BACKENDS["bake-docker"] = "{SHELL_BACKEND}.ShellBackend"
'''
# What of the caller's environment reaches the checks: how testinfra reaches the instance
# (a Docker engine, an ssh agent), nothing else (see check_env).
BACKEND_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "SSH_AUTH_SOCK")


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

    @property
    def passed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "passed"]

    @property
    def skipped(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "skipped"]

    def with_skipped(self, results: Sequence[CheckResult]) -> VerifyReport:
        """The report with checks that did not apply added (they change no verdict)."""
        return replace(self, results=(*self.results, *results))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "method": self.method,
            "instance": self.instance,
            "seconds": round(self.seconds, 3),
            "junit": self.junit,
            "passed": len(self.passed),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "results": [r.__dict__ for r in self.results],
        }

    @classmethod
    def empty(cls, method: str) -> VerifyReport:
        return cls(False, (), "", "", method, 0.0)


def skipped_results(checks: Sequence[tuple[Check, str]]) -> tuple[CheckResult, ...]:
    """Checks whose `when:` is false here, reported as skipped (never as passed)."""
    out = []
    for i, (check, why) in enumerate(checks):
        title = checkgen.describe(check)
        out.append(CheckResult(f"skipped_{i + 1:02d}", title, "skipped", why))
    return tuple(out)


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
    backend = resources.files("bake.verify").joinpath("shell_backend.py").read_text(encoding="utf-8")
    (folder / f"{SHELL_BACKEND}.py").write_text(backend, encoding="utf-8")
    (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return module, tests


def check_env(env: Mapping[str, str], home: Path) -> dict[str, str]:
    """The environment of the pytest child that runs the checks, which are Python someone
    wrote (a recipe's, or an attestation's at drift): the backend's connection settings
    and a throwaway HOME; no credentials, registry or signing secrets. The gateway adds
    only PATH and the locale (``Call.isolated``)."""
    out = {k: v for k, v in env.items() if k in BACKEND_ENV}
    out |= {"HOME": str(home), "TMPDIR": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    if site.ENABLE_USER_SITE and Path(site.getusersitepackages()).is_dir():
        out["PYTHONUSERBASE"] = site.getuserbase()  # testinfra installed with `pip --user`
    return out


def run_module(
    runner: Runner,
    env: Mapping[str, str],
    hosts: str,
    module: Path,
    tests: Sequence[checkgen.GeneratedTest],
    extra_args: Sequence[str] = (),
) -> list[CheckResult]:
    """Run a written verify module against `hosts` (any testinfra backend URL), in a child
    with a minimal environment (:func:`check_env`)."""
    junit = module.parent / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = (*pytest_argv(module, hosts, junit)[:-1], *extra_args, str(module))
    home = Path(tempfile.mkdtemp(prefix="home-", dir=module.parent))
    try:
        env = check_env(env, home)
        result = runner(Call(argv=argv, env=env, cwd=module.parent, check=False, timeout=1800, isolated=True))
    finally:
        shutil.rmtree(home, ignore_errors=True)
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
