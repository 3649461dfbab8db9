"""Rendered templates against golden files; output is byte-identical for the same input.

Regenerate the golden files after an intended change with
`UPDATE_GOLDEN=1 python -m pytest tests/unit/compile/test_template.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bake.compile.template import compile_plan, env_string, write_tree
from bake.infra.packer import PackerInfo
from bake.plan import Plan, plan_recipe
from bake.recipe.render import secret_marker
from tests.conftest import FIXTURES, RECIPES

GOLDEN = FIXTURES / "golden"
OLD = PackerInfo((1, 6, 6))
NEW = PackerInfo((1, 9, 4))
PLAYGROUND = FIXTURES / "playground" / "playground.yaml"  # every module, loops, handlers, a play
CASES = [
    *(
        (name, target)
        for name in ("debian-base", "web", "app")
        for target in ("docker", "qemu", "amazon-ebs")
    ),
    ("playground", "docker"),
    ("playground", "qemu"),
]


def _plan(name: str, target: str, info: PackerInfo = OLD) -> Plan:
    path = PLAYGROUND if name == "playground" else RECIPES / f"{name}.yaml"
    (p,) = plan_recipe(path, info, targets=[target], search_path=[RECIPES])
    return p


@pytest.mark.parametrize(("name", "target"), CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_golden(name: str, target: str) -> None:
    rendered = compile_plan(_plan(name, target))
    folder = GOLDEN / f"{name}-{target}"
    if os.environ.get("UPDATE_GOLDEN"):
        write_tree(rendered, folder)
    expected = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert dict(rendered.files) == expected


def test_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    a = write_tree(compile_plan(_plan("web", "docker")), tmp_path / "a").parent
    b = write_tree(compile_plan(_plan("web", "docker")), tmp_path / "b").parent
    files_a = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert files_a == files_b
    assert (a / "scripts" / "01-packages.sh").stat().st_mode & 0o111


def test_required_plugins_only_for_packer_with_init() -> None:
    old = compile_plan(_plan("web", "docker", OLD)).files["web.pkr.hcl"].decode()
    new = compile_plan(_plan("web", "docker", NEW)).files["web.pkr.hcl"].decode()
    assert "required_plugins" not in old
    assert "required_plugins" in new and 'source  = "github.com/hashicorp/docker"' in new


def test_docker_changes_clear_entrypoint_and_label_the_key() -> None:
    p = _plan("debian-base", "docker")
    text = compile_plan(p).files["debian-base.pkr.hcl"].decode()
    assert '"ENTRYPOINT []"' in text
    assert f'"LABEL \\"io.bake.key\\"=\\"{p.key}\\""' in text
    assert "pull    = false" in text


def test_secret_reaches_packer_only_as_sensitive_variable() -> None:
    rendered = compile_plan(_plan("app", "docker"))
    template = rendered.files["app.pkr.hcl"].decode()
    assert rendered.secrets == ("license_key",)
    assert 'variable "secret_license_key"' in template and "sensitive   = true" in template
    assert 'environment_vars = ["LICENSE=${var.secret_license_key}"]' in template
    for content in rendered.files.values():
        assert b"bake-secret" not in content and b"\x00" not in content


def test_env_string_escapes_around_secret_markers() -> None:
    pair = ("AUTH", 'Bearer "' + secret_marker("tok") + '" ${x}')
    assert env_string(pair) == '"AUTH=Bearer \\"${var.secret_tok}\\" $${x}"'


def test_when_selects_steps_per_target() -> None:
    docker = _plan("web", "docker").resolved.steps
    qemu = _plan("web", "qemu").resolved.steps
    assert len(qemu) == len(docker) + 1
    assert qemu[-1][1].shell == "nginx -t"
