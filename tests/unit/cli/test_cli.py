"""The CLI through Typer's runner: exit codes, --json, --help on every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bake.cli import app
from tests.conftest import FIXTURES, RECIPES

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("bake ")


def test_validate_ok_and_json() -> None:
    result = runner.invoke(app, ["validate", str(RECIPES / "web.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["recipes"][0]["name"] == "web"


def test_validate_bad_exits_2_with_location() -> None:
    result = runner.invoke(app, ["validate", str(FIXTURES / "bad" / "typo-module.yaml")])
    assert result.exit_code == 2
    assert "typo-module.yaml:6:5: steps[0]: unknown module `pakages`" in result.output


def test_validate_bad_json_error() -> None:
    result = runner.invoke(app, ["validate", str(FIXTURES / "bad" / "cycle-a.yaml"), "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert doc["ok"] is False and "cycle" in doc["error"]


def test_plan_json() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            str(RECIPES / "web.yaml"),
            "-t",
            "docker",
            "--packer-version",
            "1.6.6",
            "--offline",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (p,) = json.loads(result.output)["plans"]
    assert p["chain"] == ["debian-base", "web"] and p["packer_version"] == "1.6.6"


def test_render_writes_template(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "render",
            str(RECIPES / "web.yaml"),
            "-t",
            "qemu",
            "-o",
            str(out),
            "--packer-version",
            "1.6.6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "web.pkr.hcl").is_file() and (out / "scripts" / "01-packages.sh").is_file()


def test_schema_is_json_schema_and_committed_copy_is_current() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["additionalProperties"] is False
    assert "steps" in schema["properties"]
    committed = json.loads((RECIPES.parent / "bake-recipe.schema.json").read_text())
    assert committed == schema, "run `make schema` after changing the models"


def test_init_scaffolds_a_valid_recipe(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "svc", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["validate", str(tmp_path / "svc.yaml")]).exit_code == 0
    again = runner.invoke(app, ["init", "svc", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output


@pytest.mark.parametrize("command", ["validate", "plan", "render", "schema", "init", "import-ansible"])
def test_help_on_every_command(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_build_of_a_cloud_target_says_why_and_what_to_do_instead(tmp_path: Path) -> None:
    env = {"BAKE_STATE_DIR": str(tmp_path)}
    result = runner.invoke(app, ["build", str(RECIPES / "web.yaml"), "-t", "amazon-ebs"], env=env)
    assert result.exit_code != 0
    assert "needs a cloud account" in result.output and "bake render" in result.output
    assert not (tmp_path / "records").exists()


def test_check_reproducible_is_for_containers(tmp_path: Path) -> None:
    env = {"BAKE_STATE_DIR": str(tmp_path)}
    args = ["build", str(RECIPES / "web.yaml"), "-t", "qemu", "--offline", "--check-reproducible"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code != 0 and "compares reproducible bakes" in result.output


def test_import_ansible_says_what_it_mapped_and_what_it_could_not(tmp_path: Path) -> None:
    (tmp_path / "debian-base.yaml").write_bytes((RECIPES / "debian-base.yaml").read_bytes())
    out = tmp_path / "shop.yaml"
    result = runner.invoke(app, ["import-ansible", str(FIXTURES / "import" / "shop.yml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "21 tasks mapped to bake modules, 7 kept in Ansible, 2 dropped" in result.output
    assert "mapped   log level → lineinfile" in result.output
    assert "ansible  record the debian version   uses `debian_version`, not a play var" in result.output
    assert "dropped  show the port   `debug` prints while Ansible runs" in result.output
    assert "ok  validated for: docker, qemu, amazon-ebs" in result.output
    again = runner.invoke(app, ["import-ansible", str(FIXTURES / "import" / "shop.yml"), "-o", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
