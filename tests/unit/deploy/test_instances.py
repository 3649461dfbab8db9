"""bake.deploy.instances: instance URLs and the one ssh command."""

from __future__ import annotations

import hashlib

import pytest

from bake.attest import filemanifest as fm
from bake.attest.digest import sha256_bytes
from bake.deploy.instances import Instance, parse_instance, ssh_call
from bake.errors import BakeError
from bake.targets.docker.engine import Engine

IMAGE = sha256_bytes(b"image")
ENGINE = Engine("unix:///test/docker.sock")
VOL = fm.volatile_set()


def hexsha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- instances ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "instance"),
    [
        ("docker://web-1", Instance("docker", "web-1")),
        ("docker://root@web-1", Instance("docker", "web-1")),
        ("ssh://admin@host.example", Instance("ssh", "host.example", "admin")),
        ("ssh://admin@10.0.0.5:2222", Instance("ssh", "10.0.0.5", "admin", 2222)),
        ("ssh://[fd00::5]:22", Instance("ssh", "fd00::5", None, 22)),
    ],
)
def test_parse_instance(url: str, instance: Instance) -> None:
    assert parse_instance(url) == instance


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("web-1", "not an instance URL"),
        ("docker://", "not an instance URL"),
        ("docker://-H=tcp://evil", "not a container name"),
        ("docker://a/b", "not a container name"),
        ("ssh://admin:hunter2@host", "holds a password"),
        ("ssh://host:99999", "not an ssh URL"),
        ("ssh://host/path", "not an ssh URL"),
        ("http://host", "unknown scheme 'http'"),
    ],
)
def test_parse_instance_refuses(url: str, message: str) -> None:
    with pytest.raises(BakeError, match=message) as info:
        parse_instance(url)
    assert info.value.hint
    assert "hunter2" not in info.value.message


def test_ssh_call_is_one_non_interactive_command() -> None:
    inst = Instance("ssh", "10.0.0.5", "admin", 2222)
    call = ssh_call(inst, VOL, {"SSH_AUTH_SOCK": "/run/agent.sock", "SECRET": "x"})
    assert call.argv[:6] == ("ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20")
    assert call.argv[6:12] == ("-p", "2222", "-l", "admin", "--", "10.0.0.5")
    assert call.argv[12] == fm.find_command(VOL)
    assert call.env == {"SSH_AUTH_SOCK": "/run/agent.sock"}
