"""The committed JSON Schema against the recipes people write, checked by a standard
validator (check-jsonschema, the one editors and pre-commit hooks use), not by bake."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bake.cli import app
from bake.recipe.schema import TEMPLATE, accept_templates
from tests.conftest import RECIPES

ROOT = RECIPES.parent
SCHEMA = ROOT / "bake-recipe.schema.json"
EXAMPLES = sorted([*RECIPES.glob("*.yaml"), *(ROOT / "bench" / "recipes").glob("*.yaml")])


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema")
    exe = shutil.which("check-jsonschema")
    argv = [exe] if exe else [sys.executable, "-m", "check_jsonschema"]
    return subprocess.run(
        [*argv, "--schemafile", str(SCHEMA), *map(str, files)], capture_output=True, text=True, check=False
    )


def test_every_example_recipe_validates_against_the_committed_schema() -> None:
    assert len(EXAMPLES) >= 3
    got = check_jsonschema(*EXAMPLES)
    assert got.returncode == 0, got.stdout + got.stderr


def test_a_scaffolded_recipe_validates_too(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", "demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.rglob("*.yaml"))
    assert files
    got = check_jsonschema(*files)
    assert got.returncode == 0, got.stdout + got.stderr


def test_templates_are_accepted_where_values_are_constrained(tmp_path: Path) -> None:
    recipe = {
        "name": "t",
        "version": "1.0.0",
        "base": {"image": "debian@sha256:" + "a" * 64},
        "vars": {"port": 8080, "root": "/srv"},
        "targets": {"docker": {"expose": ["{{ port }}"]}},
        "steps": [{"file": {"dest": "{{ root }}/x", "content": "x", "mode": "{{ mode }}"}}],
        "verify": [
            {"port": {"port": "{{ port }}"}},
            {"file": {"path": "{{ root }}/x", "exists": "{{ on }}"}},
        ],
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(recipe))
    got = check_jsonschema(path)
    assert got.returncode == 0, got.stdout + got.stderr
    # while a plain wrong value is still refused
    recipe["verify"] = [{"port": {"port": "eighty"}}]
    path.write_text(yaml.safe_dump(recipe))
    assert check_jsonschema(path).returncode == 1
    # and a name is never a template (it is not rendered)
    recipe["name"] = "{{ n }}"
    recipe["verify"] = []
    path.write_text(yaml.safe_dump(recipe))
    assert check_jsonschema(path).returncode == 1


def test_accept_templates_keeps_metadata_outside_and_splices_any_of() -> None:
    leaf = {"type": "integer", "title": "Port", "default": 1}
    assert accept_templates(leaf) == {"title": "Port", "default": 1, "anyOf": [{"type": "integer"}, TEMPLATE]}
    optional = {"anyOf": [{"type": "string", "pattern": "^/"}, {"type": "null"}], "title": "Dest"}
    assert accept_templates(optional) == {
        "title": "Dest",
        "anyOf": [{"type": "string", "pattern": "^/"}, {"type": "null"}, TEMPLATE],
    }
    assert accept_templates({"type": "string"}) == {"type": "string"}  # any string already
