"""`bake rollout`, `bake deployments`, `bake reconcile` through Typer's runner (no swarm
needed for what is checked here; tests/integration/test_rollout.py runs them on one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bake.attest.keys import load_signing_key, write_keypair
from bake.cli import app
from bake.registry.dirstore import DirRegistry
from tests.unit.deploy.test_deployments import append, draft
from tests.unit.registry.regs import Setup, publish

cli = CliRunner()


@pytest.mark.parametrize("command", ["rollout", "deployments", "reconcile"])
def test_help(command: str) -> None:
    result = cli.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["rollout", "web@stable"], "give SPEC and --service SVC"),
        (["rollout", "web@stable", "--undo", "web"], "--undo SVC takes no SPEC"),
        (["rollout", "web@stable", "--service", "web/1"], "not a service name"),
        (["rollout", "web@stable", "--service", "web", "--health-retries", "0"], "--health-retries"),
    ],
)
def test_usage_errors_exit_2_before_anything_runs(args: list[str], said: str, tmp_path: Path) -> None:
    result = cli.invoke(
        app, [*args, "--json"], env={"BAKE_STATE_DIR": str(tmp_path), "DOCKER_HOST": "unix:///nonexistent"}
    )
    assert result.exit_code == 2, result.output
    assert said in json.loads(result.stdout)["error"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    private, public = write_keypair(tmp_path / "ci", None)
    s = Setup(DirRegistry.at(tmp_path / "reg"), load_signing_key(private, None), tmp_path)
    publish(s)
    append(s, draft(1))
    append(s, draft(2, 1, outcome="rolled-back"))
    return {
        "BAKE_STATE_DIR": str(tmp_path / "state"),
        "BAKE_REGISTRY": f"dir:{tmp_path / 'reg'}",
        "BAKE_TRUST": str(public),
    }


def test_deployments_lists_records_as_text_and_json(env: dict[str, str]) -> None:
    text = cli.invoke(app, ["deployments", "web"], env=env)
    assert text.exit_code == 0, text.output
    rows = text.stdout.splitlines()
    assert rows[0].startswith("2024-05-01T12:00:00Z  web #1   rollout   succeeded")
    assert "rolled-back" in rows[1] and rows[2] == "    2/2 tasks healthy"
    doc = json.loads(cli.invoke(app, ["deployments", "--json"], env=env).stdout)
    assert [r["outcome"] for r in doc["deployments"]] == ["succeeded", "rolled-back"]
    none = cli.invoke(app, ["deployments", "api"], env=env)
    assert none.exit_code == 0 and "no deployments of api recorded" in none.stdout


def test_resolve_k8s_through_the_command_line(env: dict[str, str]) -> None:
    ok = cli.invoke(app, ["resolve", "web@1.0.0", "--format", "k8s"], env=env)
    assert ok.exit_code == 0, ok.output
    assert 'newName: "r.example/web"' in ok.stdout
