from __future__ import annotations

import shutil
from pathlib import Path

from bake.infra.packer import PackerInfo
from bake.plan import plan_document, plan_recipe
from tests.conftest import RECIPES

INFO = PackerInfo((1, 6, 6))


def _copy_recipes(tmp_path: Path) -> Path:
    shutil.copytree(RECIPES, tmp_path / "recipes")
    return tmp_path / "recipes"


def _key(folder: Path, name: str = "web", info: PackerInfo = INFO, **kw: object) -> str:
    (p,) = plan_recipe(folder / f"{name}.yaml", info, targets=["docker"], **kw)  # type: ignore[arg-type]  # kwargs pass through
    return p.key


def test_key_is_stable(tmp_path: Path) -> None:
    folder = _copy_recipes(tmp_path)
    assert _key(folder) == _key(folder) == _key(RECIPES)


def test_key_covers_referenced_files(tmp_path: Path) -> None:
    folder = _copy_recipes(tmp_path)
    before = _key(folder)
    (folder / "files" / "site.conf.j2").write_text("server { listen 1; }\n")
    assert _key(folder) != before


def test_key_covers_the_parent(tmp_path: Path) -> None:
    folder = _copy_recipes(tmp_path)
    before = _key(folder)
    base = folder / "debian-base.yaml"
    base.write_text(base.read_text().replace("[ca-certificates, tzdata]", "[ca-certificates]"))
    assert _key(folder) != before


def test_key_covers_packer_version_and_vars(tmp_path: Path) -> None:
    folder = _copy_recipes(tmp_path)
    assert _key(folder) != _key(folder, info=PackerInfo((1, 9, 0)))
    assert _key(folder) != _key(folder, extra_vars={"listen_port": "9090"})


def test_plan_document_shows_chain_vars_and_inputs() -> None:
    (p,) = plan_recipe(RECIPES / "web.yaml", INFO, targets=["docker"])
    doc = plan_document(p)
    assert doc["chain"] == ["debian-base", "web"]
    assert doc["vars"]["listen_port"] == 8080
    assert doc["parent"]["name"] == "debian-base"
    assert "file:files/site.conf.j2" in doc["inputs"]
    assert doc["bake_key"].startswith("sha256:")
