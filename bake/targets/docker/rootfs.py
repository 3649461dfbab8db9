"""The docker target's base: a root filesystem from mmdebstrap, imported into the engine.

The tarball is imported and tagged by the bootstrap key, so it is made once per change of
its inputs. /usr/sbin/policy-rc.d forbids starting services while packages are installed
(there is no init system in a build container). SOURCE_DATE_EPOCH makes mmdebstrap write a
byte-identical root filesystem for the same mirror state.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from bake.errors import BakeError
from bake.infra.process import Call, Runner
from bake.recipe.models import Bootstrap
from bake.targets.bootstrap import bootstrap_key, check_inputs, host_sources, pick_mirror
from bake.targets.docker.engine import Engine, image_id
from bake.targets.docker.normalize import EPOCH

POLICY_RC_D = (
    'printf "#!/bin/sh\\n# bake: no services start inside image builds\\nexit 101\\n"'
    ' > "$1/usr/sbin/policy-rc.d" && chmod 0755 "$1/usr/sbin/policy-rc.d"'
)


def mmdebstrap_argv(spec: Bootstrap, mirror: str, out: Path, *, container: bool) -> tuple[str, ...]:
    check_inputs(spec, mirror)
    argv = [
        "mmdebstrap",
        "--quiet",
        f"--variant={spec.variant}",
        "--format=tar",
        '--aptopt=Acquire::Retries "3"',
    ]
    if spec.include:
        argv.append("--include=" + ",".join(spec.include))
    if container:
        argv.append("--customize-hook=" + POLICY_RC_D)
    # no apt lists or caches in the image: smaller, and nothing that varies by date
    argv.append('--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    # the build host's name and resolver have no place in an image
    argv.append('--customize-hook=: > "$1/etc/hostname"; : > "$1/etc/resolv.conf"')
    argv += ["--", spec.suite, str(out), mirror]
    return tuple(argv)


def rootfs_repository(name: str) -> str:
    return f"bake/{name}-rootfs"


def ensure_docker_rootfs(
    runner: Runner,
    eng: Engine,
    name: str,
    spec: Bootstrap,
    work: Path,
    *,
    mirror: str | None = None,
    log: Runner | None = None,
    rebuild: bool = False,
    pins: Mapping[str, str] | None = None,
) -> tuple[str, str, bool]:
    """The image ID of the bootstrapped root filesystem: (image_id, ref, built_now)."""
    mirror = (spec.mirror or mirror or pick_mirror(host_sources(), spec.suite)).rstrip("/")
    key = bootstrap_key(spec, mirror, "docker", pins)
    ref = f"{rootfs_repository(name)}:{key.removeprefix('sha256:')[:12]}"
    existing = image_id(runner, eng, ref)
    if existing and not rebuild:
        return existing, ref, False
    if shutil.which("mmdebstrap") is None:
        raise BakeError(
            "mmdebstrap is needed to bootstrap the base root filesystem",
            "apt-get install mmdebstrap",
        )
    work.mkdir(parents=True, exist_ok=True)
    tarball = work / f"{name}-rootfs.tar"
    try:
        # SOURCE_DATE_EPOCH: mmdebstrap then writes a byte-identical rootfs for the same
        # mirror state (clamped times, fixed shadow dates)
        (log or runner)(
            Call(
                argv=mmdebstrap_argv(spec, mirror, tarball, container=True),
                env={"SOURCE_DATE_EPOCH": str(EPOCH)},
                timeout=3600,
            )
        )
        runner(
            eng.call(
                "import",
                "--change",
                'CMD ["/bin/bash"]',
                "--change",
                f"LABEL io.bake.bootstrap={key}",
                str(tarball),
                ref,
            )
        )
    finally:
        tarball.unlink(missing_ok=True)
    new = image_id(runner, eng, ref)
    if new is None:  # pragma: no cover - docker import succeeded but the tag is gone
        raise BakeError(f"imported {ref} but cannot find it")
    return new, ref, True
