from __future__ import annotations

from pathlib import Path

import pytest

from bake.errors import RecipeError
from bake.recipe.load import parse_extra_vars, resolve, resolve_targets
from bake.targets.docker.config import DockerConfig
from tests.conftest import RECIPES


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


BASE = "name: base\nversion: 1.0.0\nbase: {bootstrap: {}}\nvars: {a: base, b: base, c: base, d: base}\n"


def test_var_precedence(tmp_path: Path) -> None:
    _write(tmp_path, "base", BASE)
    child = _write(
        tmp_path,
        "child",
        "name: child\nversion: 1.0.0\nextends: base\nvars: {b: child, c: child, d: child}\n",
    )
    var_file = tmp_path / "vars.yaml"
    var_file.write_text("c: file\nd: file\n")
    r = resolve(child, "docker", var_files=[var_file], extra_vars={"d": "cli"})
    assert dict(r.vars) == {"a": "base", "b": "child", "c": "file", "d": "cli"}


def test_vars_refer_to_vars_and_builtins(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "r",
        "name: r\nversion: 2.0.0\nbase: {bootstrap: {}}\n"
        "vars: {url: 'http://{{ host }}:{{ port }}/{{ recipe.name }}', host: h, port: 80}\n"
        "steps:\n  - shell: 'echo {{ url }} {{ target }}'\n",
    )
    r = resolve(path, "docker")
    assert r.vars["url"] == "http://h:80/r"
    assert r.recipe.steps[0].shell == "echo http://h:80/r docker"


def test_extends_inherits_verify_and_targets() -> None:
    targets = resolve_targets(RECIPES / "web.yaml")
    assert set(targets) == {"docker", "qemu", "amazon-ebs"}
    web = targets["docker"]
    assert web.parent is not None and web.parent.name == "debian-base"
    assert web.chain == ("web", "debian-base")
    own = len(web.recipe.verify)
    assert len(web.verify) + len(web.skipped) == own + len(web.parent.verify)
    # inherited target config merges with the child's
    docker = web.recipe.targets.get("docker")
    assert isinstance(docker, DockerConfig)  # validated by the docker target's own model
    assert docker.env == {"LANG": "C.UTF-8"}
    assert docker.entrypoint == ("nginx", "-g", "daemon off;")


def test_template_is_rendered_on_the_host() -> None:
    web = resolve(RECIPES / "web.yaml", "docker")
    (conf,) = web.files
    assert b"listen 8080;" in conf.content
    assert conf.digest.startswith("sha256:")


def test_undeclared_target_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "r", "name: r\nversion: 1.0.0\nbase: {bootstrap: {}}\ntargets: {docker: {}}\n")
    with pytest.raises(RecipeError, match="target `qemu` is not declared"):
        resolve(path, "qemu")


def test_extra_vars_syntax() -> None:
    assert parse_extra_vars(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(RecipeError, match="expected key=value"):
        parse_extra_vars(["nope"])


def test_secret_only_in_env(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "r",
        "name: r\nversion: 1.0.0\nbase: {bootstrap: {}}\nsecrets: [{name: tok, env: TOK}]\n"
        "steps:\n  - shell: 'curl -H \"x: $T\" https://example.invalid'\n    env: {T: '{{ tok }}'}\n",
    )
    r = resolve(path, "docker")
    assert "bake-secret:tok" in r.recipe.steps[0].env["T"]


def test_search_path_finds_parents(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    _write(lib, "base", BASE)
    app = tmp_path / "app"
    app.mkdir()
    child = _write(app, "child", "name: child\nversion: 1.0.0\nextends: base\n")
    with pytest.raises(RecipeError, match="parent recipe `base` not found"):
        resolve(child, "docker")
    assert resolve(child, "docker", search_path=[lib]).parent is not None


def test_checks_with_when_apply_to_some_targets_and_are_skipped_elsewhere(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nversion: 1.0.0\nbase: {bootstrap: {suite: bookworm}}\n"
        "targets: {docker: {}, qemu: {}}\n"
        "verify:\n"
        "  - file: {path: /etc/os-release}\n"
        "  - {service: {name: ssh, running: true}, when: \"target == 'qemu'\"}\n"
        "  - {file: {path: /.dockerenv, exists: false}, when: \"{{ target != 'qemu' }}\"}\n"
    )
    docker, qemu = resolve(recipe, "docker"), resolve(recipe, "qemu")
    assert [c.kind for c in docker.verify] == ["file", "file"]
    assert [(c.kind, why) for c, why in docker.skipped] == [
        ("service", "when: target == 'qemu' is false for target docker")
    ]
    assert [c.kind for c in qemu.verify] == ["file", "service"] and len(qemu.skipped) == 1


def test_a_checks_when_must_be_a_boolean_and_names_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nversion: 1.0.0\nbase: {bootstrap: {suite: bookworm}}\n"
        'verify:\n  - {file: {path: /etc/os-release}, when: "{{ target }}"}\n'
    )
    with pytest.raises(RecipeError, match=r"r\.yaml:5:\d+: verify\[0\]\.when: `when` must be true or false"):
        resolve(recipe, "docker")
