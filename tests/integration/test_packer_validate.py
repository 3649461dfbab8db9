"""The real `packer validate` (Debian's packer here) accepts every example × target."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bake.compile.template import compile_plan, write_tree
from bake.infra import packer, process
from bake.infra.process import Call
from bake.plan import plan_recipe
from tests.conftest import FIXTURES, RECIPES

pytestmark = pytest.mark.integration

# the examples, and the recipe with every module, handlers and an Ansible play
EXAMPLES = [*sorted(RECIPES.glob("*.yaml")), FIXTURES / "playground" / "playground.yaml"]
TARGETS = ("docker", "qemu", "amazon-ebs")


@pytest.fixture(scope="module")
def info() -> packer.PackerInfo:
    if shutil.which("packer") is None:
        pytest.fail("packer is not installed: `apt-get install packer` (CI installs it)")
    return packer.detect(process.run)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("recipe", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_packer_validate_accepts_rendered_template(
    recipe: Path, target: str, info: packer.PackerInfo, tmp_path: Path
) -> None:
    if target not in ("docker", "qemu") and recipe.parent != RECIPES:
        pytest.skip("the playground declares the bakeable targets only")
    (p,) = plan_recipe(recipe, info, targets=[target], search_path=[RECIPES])
    template = write_tree(compile_plan(p), tmp_path / "out")
    if info.has_plugins:
        process.run(Call(argv=packer.init_argv(info, template)))
    result = process.run(Call(argv=packer.validate_argv(info, template), cwd=tmp_path, check=False))
    assert result.returncode == 0, result.stdout + result.stderr
