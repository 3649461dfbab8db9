"""Loops, handlers and notify, and what the new modules put in the bake key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake.errors import RecipeError
from bake.infra.packer import PackerInfo
from bake.plan import plan_recipe
from bake.recipe.load import resolve
from tests.conftest import FIXTURES, RECIPES

PLAYGROUND = FIXTURES / "playground" / "playground.yaml"
PARENT = "name: base\nversion: 1.0.0\nbase: {bootstrap: {}}\nvars: {users: [ann, bob]}\n"


def recipe(tmp_path: Path, body: str) -> Path:
    (tmp_path / "base.yaml").write_text(PARENT)
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nversion: 1.0.0\nextends: base\n" + body)
    return path


def test_a_loop_is_one_step_per_item_with_item_bound(tmp_path: Path) -> None:
    r = resolve(
        recipe(tmp_path, "steps:\n  - user: {name: '{{ item }}'}\n    loop: '{{ users }}'\n"), "docker"
    )
    assert [(i, s.user.name if s.user else None) for i, s in r.steps] == [(0, "ann"), (0, "bob")]


def test_when_is_evaluated_per_item(tmp_path: Path) -> None:
    body = "steps:\n  - shell: echo {{ item }}\n    loop: [a, b, c]\n    when: item != 'b'\n"
    r = resolve(recipe(tmp_path, body), "docker")
    assert [s.shell for _, s in r.steps] == ["echo a", "echo c"]


def test_a_loop_of_mappings(tmp_path: Path) -> None:
    body = (
        "steps:\n  - file: {dest: '/etc/{{ item.name }}', content: '{{ item.value }}'}\n"
        "    loop: [{name: a, value: '1'}, {name: b, value: '2'}]\n"
    )
    r = resolve(recipe(tmp_path, body), "docker")
    assert [(s.file.dest, s.file.content) for _, s in r.steps if s.file] == [("/etc/a", "1"), ("/etc/b", "2")]


def test_env_must_not_differ_per_item(tmp_path: Path) -> None:
    body = "steps:\n  - shell: 'true'\n    env: {X: '{{ item }}'}\n    loop: [a, b]\n"
    with pytest.raises(
        RecipeError, match=r"r.yaml:6:5: steps\[0\].env: `env` must be the same for every item"
    ):
        resolve(recipe(tmp_path, body), "docker")


def test_handlers_are_numbered_after_the_steps_and_skipped_by_when(tmp_path: Path) -> None:
    body = (
        "steps:\n  - shell: 'true'\n    notify: [a]\n"
        "handlers:\n  - {name: a, shell: echo a}\n  - {name: b, shell: echo b, when: target == 'qemu'}\n"
    )
    r = resolve(recipe(tmp_path, body), "docker")
    assert [(i, h.name) for i, h in r.handlers] == [(1, "a")]


def test_handler_names_are_unique(tmp_path: Path) -> None:
    body = "steps: []\nhandlers:\n  - {name: a, shell: 'true'}\n  - {name: a, shell: 'false'}\n"
    with pytest.raises(RecipeError, match="handler named twice: a"):
        resolve(recipe(tmp_path, body), "docker")


def test_notify_and_env_are_refused_on_an_ansible_step(tmp_path: Path) -> None:
    (tmp_path / "play").mkdir()
    (tmp_path / "play" / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    body = "steps:\n  - ansible: {playbook: play/site.yml}\n    env: {A: b}\n"
    with pytest.raises(RecipeError, match="an `ansible` step takes no `env`"):
        resolve(recipe(tmp_path, body), "docker")


def test_every_file_of_the_play_is_an_input_and_a_role_edit_changes_the_key(tmp_path: Path) -> None:
    play = tmp_path / "play"
    (play / "roles" / "r" / "tasks").mkdir(parents=True)
    (play / "site.yml").write_text("- hosts: all\n  roles: [r]\n")
    task = play / "roles" / "r" / "tasks" / "main.yml"
    task.write_text("- ansible.builtin.debug: {msg: one}\n")
    (play / ".hidden").write_text("left out")
    path = recipe(tmp_path, "steps:\n  - ansible: {playbook: play/site.yml}\n")
    (p1,) = plan_recipe(path, PackerInfo((1, 6, 6)), targets=["docker"])
    assert {"file:play/site.yml", "file:play/roles/r/tasks/main.yml"} <= set(p1.inputs)
    assert "file:play/.hidden" not in p1.inputs
    assert "ansible-core" in p1.inputs  # the version that runs the play
    task.write_text("- ansible.builtin.debug: {msg: two}\n")
    (p2,) = plan_recipe(path, PackerInfo((1, 6, 6)), targets=["docker"])
    assert p1.key != p2.key
    assert [k for k in p1.inputs if p1.inputs[k] != p2.inputs[k]] == ["file:play/roles/r/tasks/main.yml"]


def test_a_symlink_out_of_the_recipe_folder_is_refused_in_a_play(tmp_path: Path) -> None:
    play = tmp_path / "r" / "play"
    play.mkdir(parents=True)
    (play / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "secret").write_text("no")
    (play / "vars.yml").symlink_to(tmp_path / "secret")
    (tmp_path / "r" / "base.yaml").write_text(PARENT)
    path = tmp_path / "r" / "r.yaml"
    path.write_text(
        "name: r\nversion: 1.0.0\nextends: base\nsteps:\n  - ansible: {playbook: play/site.yml}\n"
    )
    with pytest.raises(RecipeError, match="links outside the recipe's folder"):
        resolve(path, "docker")


def test_the_sha256_of_a_download_is_in_the_key(tmp_path: Path) -> None:
    keys = []
    for digest in ("a" * 64, "b" * 64):
        body = f"steps:\n  - get_url: {{url: 'http://h/x', dest: /x, sha256: {digest}}}\n"
        (p,) = plan_recipe(recipe(tmp_path, body), PackerInfo((1, 6, 6)), targets=["docker"])
        keys.append(p.key)
    assert keys[0] != keys[1]


def test_the_playground_resolves_for_both_bakeable_targets() -> None:
    for target in ("docker", "qemu"):
        r = resolve(PLAYGROUND, target, search_path=[RECIPES])
        assert [s.module for _, s in r.steps].count("file") == 5  # 3 items, a link, an absent file
        assert [h.name for _, h in r.handlers] == ["app config changed"]
        assert any(f.src == "ansible/roles/app_config/templates/greeting.j2" for f in r.files)


def test_roles_path_folders_are_inputs_too(tmp_path: Path) -> None:
    (tmp_path / "play").mkdir()
    (tmp_path / "play" / "site.yml").write_text("- hosts: all\n  roles: [shared]\n")
    role = tmp_path / "roles" / "shared" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- ansible.builtin.debug: {msg: hi}\n")
    body = "steps:\n  - ansible: {playbook: play/site.yml, roles_path: roles}\n"
    r = resolve(recipe(tmp_path, body), "docker")
    assert sorted(f.src for f in r.files) == ["play/site.yml", "roles/shared/tasks/main.yml"]
    missing = "steps:\n  - ansible: {playbook: play/site.yml, roles_path: [nowhere]}\n"
    with pytest.raises(RecipeError, match=r"steps\[0\].ansible.roles_path\[0\]: folder 'nowhere' not found"):
        resolve(recipe(tmp_path, missing), "docker")
