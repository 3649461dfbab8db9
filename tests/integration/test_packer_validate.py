"""The real `packer validate` (Debian's packer here) accepts every example × target."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bake.compile.template import compile_plan, write_tree
from bake.infra import packer, process
from bake.infra.process import Call
from bake.plan import plan_recipe
from tests.conftest import RECIPES

pytestmark = pytest.mark.integration

EXAMPLES = sorted(RECIPES.glob("*.yaml"))
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
    (p,) = plan_recipe(recipe, info, targets=[target])
    template = write_tree(compile_plan(p), tmp_path / "out")
    if info.has_plugins:
        process.run(Call(argv=packer.init_argv(info, template)))
    result = process.run(Call(argv=packer.validate_argv(info, template), cwd=tmp_path, check=False))
    assert result.returncode == 0, result.stdout + result.stderr
