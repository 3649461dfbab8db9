"""Nightly baking of a folder: the second run with nothing changed starts no packer process
and takes a small fraction of the first; a changed leaf rebakes only the leaf; a changed
base rebakes everything. Packer is wrapped by a shim on PATH that logs each invocation."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import RECIPES
from tests.integration.conftest import LICENSE, Bakes

pytestmark = pytest.mark.integration

cli = CliRunner()

TOOLS = """\
name: tools
version: 0.1.0
extends: debian-base
steps:
  - file: {dest: /etc/tools.conf, content: "edition={{ edition }}\\n"}
vars: {edition: one}
verify:
  - file: {path: /etc/tools.conf, contains: "edition={{ edition }}"}
"""


def shim(folder: Path, log: Path) -> str:
    real = shutil.which("packer")
    assert real is not None
    script = folder / "packer"
    script.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {real} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{folder}:{os.environ.get('PATH', '')}"


def test_nightly_graph(context: Bakes, tmp_path: Path) -> None:
    from bake.cli import app

    recipes = tmp_path / "recipes"
    shutil.copytree(RECIPES, recipes)
    (recipes / "tools.yaml").write_text(TOOLS)
    (tmp_path / "bin").mkdir()
    log = tmp_path / "packer.log"
    assert cli.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    env = {
        "PATH": shim(tmp_path / "bin", log),
        "BAKE_STATE_DIR": str(tmp_path / "state"),
        "DOCKER_HOST": context.engine.host,
        "BAKE_SIGNING_KEY": str(tmp_path / "k.key"),
        "BAKE_TRUST": str(tmp_path / "k.pub"),
        "BAKE_REGISTRY": f"dir:{tmp_path / 'registry'}",
        "APP_LICENSE_KEY": LICENSE,
        "CI": "true",
    }

    def run_all() -> tuple[dict[str, str], float, list[str]]:
        before = log.read_text().split() if log.exists() else []
        t0 = time.monotonic()
        result = cli.invoke(app, ["build", "--all", str(recipes), "-j", "2", "--json"], env=env)
        seconds = time.monotonic() - t0
        assert result.exit_code == 0, result.output
        doc = json.loads(result.output[result.output.index("{") :])
        after = log.read_text().split() if log.exists() else []
        return {r["name"]: r["status"] for r in doc["results"]}, seconds, after[len(before) :]

    first, t_first, calls = run_all()
    assert first == {"debian-base": "built", "web": "built", "app": "built", "tools": "built"}
    assert calls.count("build") == 4

    second, t_second, calls = run_all()
    assert set(second.values()) == {"cached"}
    assert "build" not in calls and calls == [], f"packer ran: {calls}"
    assert t_second <= 0.05 * t_first, (t_second, t_first)

    (recipes / "tools.yaml").write_text(TOOLS.replace("edition: one", "edition: two"))
    third, _, calls = run_all()
    assert third == {"debian-base": "cached", "web": "cached", "app": "cached", "tools": "built"}
    assert calls.count("build") == 1

    base = recipes / "debian-base.yaml"
    base.write_text(base.read_text().replace("timezone: Etc/UTC", "timezone: Europe/Paris"))
    fourth, _, calls = run_all()
    assert set(fourth.values()) == {"built"}
    assert calls.count("build") == 4
