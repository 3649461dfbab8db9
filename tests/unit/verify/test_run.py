"""Verify checks run in a child that holds nothing of the operator's: real pytest and
testinfra (its local backend), a recipe's raw Python check looking for credentials."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from bake.infra import process
from bake.recipe.models import Check
from bake.verify import checks as checkgen
from bake.verify.run import run_checks

SNOOP = """\
import os
leaked = sorted(k for k in os.environ if k.startswith(("AWS_", "GOOGLE_", "BAKE_", "HTTPS_PROXY")))
assert not leaked, f"the check can read {leaked}"
assert os.environ["HOME"] != os.environ.get("OPERATOR_HOME", "/root"), "the operator's HOME"
assert not os.path.exists(os.path.join(os.environ["HOME"], ".aws")), "the operator's ~/.aws"
"""


def test_checks_run_without_the_operators_credentials_or_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "operator"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = leaked\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-aws-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIALEAKED")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(home / "gcp.json"))
    monkeypatch.setenv("BAKE_SIGNING_KEY", str(home / "ci.key"))
    monkeypatch.setenv("BAKE_KEY_PASSPHRASE", "passphrase")
    checks = [
        Check.model_validate({"testinfra": SNOOP.replace('"/root"', repr(str(home)))}),
        Check.model_validate({"command": {"run": "true"}}),
    ]
    folder = tmp_path / "verify"
    report = run_checks(process.run, {"DOCKER_HOST": "unix:///x.sock"}, "local://", "web", checks, folder)
    assert [r.outcome for r in report.results] == ["passed", "passed"], report.results
    assert report.ok
    assert not list(folder.glob("home-*"))  # the throwaway HOME is gone


def test_a_service_name_is_data_in_the_generated_module_never_code() -> None:
    """A check carried in an attestation is run at `bake drift`: a quote in a service name
    must not end the Python string it is put in (nor the shell word on the instance)."""
    evil = "x' + str(__import__('os').system('touch /tmp/pwned')) + '"
    text, _ = checkgen.generate(
        "web", [Check.model_validate({"service": {"name": evil, "running": True, "enabled": True}})]
    )
    tree = ast.parse(text)
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "__import__" not in called and "str" not in called
    runs = [
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "run"
        and isinstance(n.args[0], ast.Constant)
    ]
    assert len(runs) == 2 and all("'\"'\"'" in str(r) for r in runs)  # the quote is shell-quoted too
    assert not os.path.exists("/tmp/pwned")


def test_the_bake_docker_backend_is_registered_beside_the_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "docker"  # `docker exec -i … /bin/sh`: this machine plays the container
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$*" >> "$0.log"\nexec /bin/sh\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    checks = [
        Check.model_validate({"command": {"run": "true"}}),
        Check.model_validate({"command": {"run": "echo hi", "stdout": "hi"}}),
        Check.model_validate({"command": {"run": "exit 3", "rc": 3}}),
    ]
    folder = tmp_path / "verify"
    report = run_checks(process.run, {}, "bake-docker://root@web-1", "web", checks, folder)
    assert [r.outcome for r in report.results] == ["passed", "passed", "passed"], report.results
    assert (folder / "conftest.py").is_file() and (folder / "bake_shell_backend.py").is_file()
    # one shell for every command
    assert (tmp_path / "bin" / "docker.log").read_text().splitlines() == ["exec -i -u root web-1 /bin/sh"]
