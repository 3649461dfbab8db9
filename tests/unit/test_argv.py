"""No value becomes an option of a tool: every argv a tool gets through the gateway ends
its options with `--` before the arguments that come from values (paths, references,
names), and what reaches mmdebstrap from a recipe or the host is checked first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bake.deploy.instances import Instance, ssh_call
from bake.errors import BakeError, RecipeError
from bake.infra import packer
from bake.infra.process import Call, Result
from bake.recipe.load import resolve_targets
from bake.recipe.models import Bootstrap
from bake.registry import images
from bake.registry.images import RegistryRef
from bake.targets.docker import engine as docker
from bake.targets.docker.rootfs import mmdebstrap_argv as rootfs_argv
from bake.targets.qemu import basedisk, machine
from bake.targets.qemu.basedisk import mmdebstrap_argv as basedisk_argv

EVIL = "--customize-hook=touch /tmp/pwned"
DIGEST = "sha256:" + "a" * 64
MIRROR = "http://deb.debian.org/debian"
SPEC = Bootstrap(suite="bookworm", include=("ca-certificates",))


def after_dashdash(argv: tuple[str, ...], *values: str) -> None:
    """Each value is an argument after the `--` that ends the options."""
    assert "--" in argv, argv
    for value in values:
        assert value in argv[argv.index("--") + 1 :], (value, argv)


def test_argv_builders_end_their_options_before_values() -> None:
    hostile = Path("-o=evil")
    after_dashdash(rootfs_argv(SPEC, MIRROR, hostile, container=True), "bookworm", str(hostile), MIRROR)
    after_dashdash(basedisk_argv(SPEC, MIRROR, Path("/o"), hostile), "bookworm", str(hostile), MIRROR)
    after_dashdash(basedisk.mkfs_argv(hostile, hostile, "2G"), str(hostile))
    after_dashdash(basedisk.convert_argv(hostile, hostile), str(hostile))
    after_dashdash(machine.overlay_argv(Path("/i/d.qcow2"), hostile), str(hostile))
    after_dashdash(machine.ssh_argv(Path("/c"), "true"), machine.SSH_ALIAS)
    after_dashdash(machine.ssh_stop_master_argv(Path("/c")), machine.SSH_ALIAS)
    after_dashdash(images.copy_argv("-src", "-dest"), "-src", "-dest")
    after_dashdash(images.inspect_argv(RegistryRef.parse(f"127.0.0.1:5000/web@{DIGEST}")))
    info = packer.PackerInfo((1, 6, 6))
    for argv in (
        packer.build_argv(info, hostile),
        packer.validate_argv(info, hostile),
        packer.init_argv(info, hostile),
    ):
        after_dashdash(argv, str(hostile))
    after_dashdash(ssh_call(Instance("ssh", "h", "root"), frozenset(), {}).argv, "h")


class Calls:
    def __init__(self) -> None:
        self.argv: list[tuple[str, ...]] = []

    def __call__(self, call: Call, on_line: object = None) -> Result:
        self.argv.append(call.argv)
        return Result(call.argv, 0, "{}", "", 0.0)


def test_docker_calls_take_references_as_arguments() -> None:
    calls, eng = Calls(), docker.Engine("unix:///x.sock")
    docker.run_detached(calls, eng, "-v=/:/host", "bake-verify", entrypoint="sleep", args=("infinity",))
    docker.inspect_image(calls, eng, "--format={{.}}")
    docker.tag(calls, eng, "-a", "-b")
    docker.remove_container(calls, eng, "-x")
    docker.container_state(calls, eng, "-x")
    after_dashdash(calls.argv[0], "-v=/:/host", "infinity")
    after_dashdash(calls.argv[1], "--format={{.}}")
    after_dashdash(calls.argv[2], "-a", "-b")
    after_dashdash(calls.argv[3], "-x")
    after_dashdash(calls.argv[4], "-x")


@pytest.mark.parametrize(
    "spec",
    [
        Bootstrap.model_construct(suite=EVIL, include=(), variant="minbase"),
        Bootstrap.model_construct(
            suite="bookworm", include=("-oAPT::Update::Pre-Invoke::=id",), variant="minbase"
        ),
        Bootstrap.model_construct(suite="bookworm bullseye", include=(), variant="minbase"),
    ],
)
def test_mmdebstrap_refuses_values_that_are_no_suite_or_package(spec: Bootstrap) -> None:
    with pytest.raises(BakeError, match="is not valid") as info:
        rootfs_argv(spec, MIRROR, Path("/o"), container=True)
    assert info.value.exit_code == 2
    with pytest.raises(BakeError, match="is not valid"):
        basedisk_argv(spec, MIRROR, Path("/o"), Path("/r"))


@pytest.mark.parametrize("mirror", [EVIL, "ftp://x/debian", "http://x/debian --include=evil", "cdrom:[x]/"])
def test_mmdebstrap_refuses_a_mirror_that_is_no_http_or_file_url(mirror: str) -> None:
    """A mirror also comes from the host's apt sources, where any line may stand."""
    with pytest.raises(BakeError, match="bootstrap mirror") as info:
        rootfs_argv(SPEC, mirror, Path("/o"), container=True)
    assert "bootstrap.mirror" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("suite", EVIL),
        ("mirror", "http://x/ --customize-hook=id"),
        ("mirror", "ftp://x"),
        ("include", ["-x"]),
    ],
)
def test_a_recipe_with_such_a_bootstrap_is_invalid_where_it_says_so(
    tmp_path: Path, field: str, value: object
) -> None:
    recipe = tmp_path / "base.yaml"
    bootstrap = {"suite": "bookworm", field: value}
    recipe.write_text(f"name: base\nversion: 1.0.0\nbase:\n  bootstrap: {json.dumps(bootstrap)}\n")
    with pytest.raises(RecipeError, match=rf"base.yaml:4:\d+: base.bootstrap.{field}"):
        resolve_targets(recipe)
