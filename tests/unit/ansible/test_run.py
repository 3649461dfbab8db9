"""The Ansible runner's pure parts, and the compiled play it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bake.ansible.run import PlayError, ansible_environment, connection_vars, playbook_argv, take_secrets
from bake.compile.template import compile_plan
from bake.infra.packer import PackerInfo
from bake.plan import plan_recipe
from tests.conftest import FIXTURES, RECIPES

PLAYGROUND = FIXTURES / "playground" / "playground.yaml"


def test_docker_connection_by_container_id() -> None:
    got = connection_vars({"BAKE_ANSIBLE_CONNECTION": "bake_docker", "BAKE_ANSIBLE_HOST": "c0ffee"})
    assert got["ansible_connection"] == "bake_docker" and got["ansible_host"] == "c0ffee"
    assert "ansible_port" not in got and "ansible_ssh_common_args" not in got


def test_ssh_connection_with_the_throwaway_key() -> None:
    env = {
        "BAKE_ANSIBLE_CONNECTION": "ssh",
        "BAKE_ANSIBLE_HOST": "127.0.0.1",
        "BAKE_ANSIBLE_PORT": "2222",
        "BAKE_ANSIBLE_USER": "root",
        "BAKE_ANSIBLE_KEY_FILE": "/w/ssh/id_ed25519",
    }
    got = connection_vars(env)
    assert got["ansible_port"] == 2222 and got["ansible_user"] == "root"
    assert got["ansible_ssh_private_key_file"] == "/w/ssh/id_ed25519"
    assert "UserKnownHostsFile=/dev/null" in got["ansible_ssh_common_args"]


def test_no_connection_is_an_error() -> None:
    with pytest.raises(PlayError, match="BAKE_ANSIBLE_CONNECTION"):
        connection_vars({})


def test_secrets_are_taken_out_of_the_environment() -> None:
    env = {"PKR_VAR_secret_token": "s3cret", "PKR_VAR_secret_other": "x", "PATH": "/bin"}
    assert take_secrets(["token"], env) == {"token": "s3cret"}
    assert env == {"PATH": "/bin"}
    with pytest.raises(PlayError, match="secret `token` did not reach the play"):
        take_secrets(["token"], {})


def test_argv_has_no_extra_vars_and_no_secrets(tmp_path: Path) -> None:
    config = {
        "inventory": "inv.yml",
        "wrapper": "play.yml",
        "check": True,
        "tags": ["a", "b"],
        "skip_tags": [],
    }
    argv = playbook_argv(config, tmp_path)
    assert argv == [
        "ansible-playbook",
        "-i",
        str(tmp_path / "inv.yml"),
        "--check",
        "--tags",
        "a,b",
        str(tmp_path / "play.yml"),
    ]


def test_ansible_is_configured_for_this_run_alone(tmp_path: Path) -> None:
    env = ansible_environment(tmp_path, [tmp_path / "roles"])
    assert env["ANSIBLE_CONFIG"] == str(tmp_path / "ansible.cfg")
    assert env["ANSIBLE_PIPELINING"] == "True" and env["ANSIBLE_NO_TARGET_SYSLOG"] == "True"
    assert env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] == "False"
    assert env["ANSIBLE_CONNECTION_PLUGINS"].endswith("bake/ansible/plugins/connection")


def test_the_compiled_play_carries_vars_but_no_secret_value() -> None:
    (p,) = plan_recipe(PLAYGROUND, PackerInfo((1, 6, 6)), targets=["docker"], search_path=[RECIPES])
    files = compile_plan(p).files
    config = json.loads(files["files/12-ansible/bake-play.json"])
    assert config["secrets"] == ["play_token"] and "play_token" not in config["vars"]
    assert config["vars"]["app_port"] == 8081 and config["vars"]["target"] == "docker"
    wrapper = yaml.safe_load(files["files/12-ansible/bake-play.yml"])
    assert [next(iter(p)) for p in wrapper] == ["name", "ansible.builtin.import_playbook", "name"]
    assert wrapper[1]["ansible.builtin.import_playbook"] == "ansible/site.yml"
    assert all(
        t["tags"] == ["always"] and t["check_mode"] is False
        for p in (wrapper[0], wrapper[2])
        for t in p["tasks"]
    )
    inventory = yaml.safe_load(files["files/12-ansible/bake-inventory.yml"])
    assert inventory["all"]["children"]["app"]["hosts"] == {"default": {}}
    assert files["files/12-ansible/ansible/roles/app_config/templates/greeting.j2"].startswith(
        b"{{ greeting }}"
    )
    template = files["playground.pkr.hcl"].decode()
    assert 'provisioner "shell-local"' in template and '"BAKE_ANSIBLE_HOST=${build.ID}"' in template
    assert 'provisioner "ansible"' not in template
