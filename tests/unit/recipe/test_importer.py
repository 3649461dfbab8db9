"""`bake import-ansible`'s conversion (pure) and the use case on the 30-task fixture."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from bake.app.importer import ImportRequest, import_ansible
from bake.app.session import Session
from bake.errors import RecipeError
from bake.recipe.ansible_modules import Unmappable
from bake.recipe.importer import _free_form, convert, convert_task
from tests.conftest import FIXTURES, RECIPES

SHOP = FIXTURES / "import" / "shop.yml"
KNOWN = frozenset({"app_dir", "item", "target", "recipe"})


def step(task: Mapping[str, object], handlers: dict[str, str] | None = None) -> dict[str, object]:
    return convert_task(task, KNOWN, handlers or {}, {})


def test_free_form_arguments_keep_jinja_whole() -> None:
    assert _free_form("path={{ app_dir }}/x state=directory mode='0755'") == {
        "path": "{{ app_dir }}/x",
        "state": "directory",
        "mode": "0755",
    }


def test_modules_map_one_to_one() -> None:
    assert step({"ansible.builtin.apt": {"name": ["a", "b"], "update_cache": True}}) == {
        "packages": ["a", "b"]
    }
    assert step({"name": "x", "file": "path={{ app_dir }} state=directory mode=0750"}) == {
        "name": "x",
        "file": {"dest": "{{ app_dir }}", "state": "directory", "mode": "0750"},
    }
    assert step({"command": "ls -l /"}) == {"command": ["ls", "-l", "/"]}
    assert step({"service": {"name": "nginx", "enabled": True, "state": "started"}}) == {
        "service": {"name": "nginx", "enabled": True}
    }
    got = step({"copy": {"src": "a.conf", "dest": "/etc/a.conf", "mode": 0o640}})
    assert got == {"copy": {"src": "files/a.conf", "dest": "/etc/a.conf", "mode": "0640"}}


def test_loop_when_and_notify_carry_over() -> None:
    task = {
        "file": {"path": "/x/{{ item }}", "state": "directory"},
        "loop": ["a", "b"],
        "when": ["target == 'docker'", "app_dir != ''"],
        "notify": ["mapped", "dropped"],
    }
    got = step(task, {"mapped": "mapped", "dropped": "dropped"})
    assert got["loop"] == ["a", "b"] and got["notify"] == ["mapped"]
    assert got["when"] == "(target == 'docker') and (app_dir != '')"


@pytest.mark.parametrize(
    ("task", "why"),
    [
        ({"command": "uname -r", "register": "kernel"}, "uses `register`"),
        (
            {"copy": {"content": "{{ ansible_hostname }}", "dest": "/etc/h"}},
            "uses `ansible_hostname`, not a play var",
        ),
        ({"file": {"path": "{{ app_dir | bool }}", "state": "absent"}}, "Jinja2 that only Ansible has"),
        ({"get_url": {"url": "http://h/x", "dest": "/x"}}, "without `checksum: sha256:"),
        ({"set_fact": {"a": 1}}, "module `set_fact` has no bake counterpart"),
        ({"file": {"path": "/x", "state": "touch"}}, "`file` with state: touch"),
        ({"shell": "true", "notify": "kept"}, "a handler that stays in Ansible"),
    ],
)
def test_what_stays_ansible_says_why(task: dict[str, object], why: str) -> None:
    with pytest.raises(Unmappable, match=why.replace("|", r"\|")):
        step(task, {"kept": "ansible"})


def test_the_30_task_playbook(tmp_path: Path) -> None:
    plays = yaml.safe_load(SHOP.read_text())
    templates = {"templates/shop.conf.j2": (SHOP.parent / "templates" / "shop.conf.j2").read_text()}
    out = convert(plays, "shop", "debian-base", "shop.yml", templates)
    tasks = [x for x in out.report if not x.task.startswith(("handler ", "role "))]
    assert len(tasks) == 30
    outcomes = [x.outcome for x in tasks]
    assert (outcomes.count("mapped"), outcomes.count("ansible"), outcomes.count("dropped")) == (21, 7, 2)
    assert list(out.playbooks) == ["imported-01.yml"]  # the unmapped tasks run together, in place
    names = [s.get("name") for s in out.recipe["steps"]]
    assert names.index("ansible: imported-01.yml") == names.index("unpack release tools") + 1
    assert out.recipe["handlers"] == [
        {"name": "reload shop config", "shell": "date +%s > /etc/shop/reloaded"}
    ]
    assert out.files == {"files/motd": "files/motd", "templates/shop.conf.j2": "templates/shop.conf.j2"}


def test_import_writes_a_recipe_that_validates(tmp_path: Path) -> None:
    shutil.copy(RECIPES / "debian-base.yaml", tmp_path / "debian-base.yaml")
    session = Session.load(cwd=tmp_path, environ={})
    result = import_ansible(session, ImportRequest(SHOP, tmp_path / "shop.yaml"))
    assert result.targets and result.count("mapped") == 21 and result.count("ansible") == 7
    assert (tmp_path / "files" / "motd").is_file() and (tmp_path / "templates" / "shop.conf.j2").is_file()
    assert (tmp_path / "ansible" / "imported-01.yml").is_file()
    assert (tmp_path / "ansible" / "templates" / "shop.conf.j2").is_file()  # what the play may read
    with pytest.raises(RecipeError, match="exists"):
        import_ansible(session, ImportRequest(SHOP, tmp_path / "shop.yaml"))
