"""Base root filesystems without an image hub: mmdebstrap from a Debian mirror.

The mirror defaults to the Debian mirror in the host's apt sources (one-line `.list` or
deb822 `.sources`). The tarball is imported into Docker and tagged by the bootstrap key
(a hash of distro, suite, mirror, variant and packages), so it is rebuilt only when one of
those changes. For containers, /usr/sbin/policy-rc.d forbids starting services while
packages are installed (there is no init system in a build container).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bake.docker import Engine, image_id
from bake.errors import BakeError
from bake.process import Call, Runner
from bake.recipe.models import Bootstrap
from bake.reproducible import EPOCH

SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
FALLBACK_MIRROR = "http://deb.debian.org/debian"
POLICY_RC_D = (
    'printf "#!/bin/sh\\n# bake: no services start inside image builds\\nexit 101\\n"'
    ' > "$1/usr/sbin/policy-rc.d" && chmod 0755 "$1/usr/sbin/policy-rc.d"'
)


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line(text: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        if parts and parts[0].startswith("["):  # options like [arch=amd64 signed-by=…]
            while parts and not parts[0].endswith("]"):
                parts.pop(0)
            parts = parts[1:]
        if len(parts) >= 2:
            out.append(AptSource(parts[0], (parts[1],), tuple(parts[2:])))
    return out


def parse_deb822(text: str) -> list[AptSource]:
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            k, _, v = raw.partition(":")
            fields[k.strip().lower()] = v.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(
                    uri,
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "").split()),
                )
            )
    return out


def host_sources(paths: Iterable[Path] = SOURCES) -> list[AptSource]:
    found: list[AptSource] = []
    for p in paths:
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in files:
            if not f.is_file():
                continue
            text = f.read_text(errors="replace")
            if f.suffix == ".sources":
                found += parse_deb822(text)
            elif f.suffix == ".list":
                found += parse_one_line(text)
    return found


def pick_mirror(sources: Iterable[AptSource], suite: str) -> str:
    """The host's mirror serving `suite` (e.g. bookworm) from the Debian archive."""
    candidates = [s for s in sources if suite in s.suites and "main" in s.components]
    for s in candidates:
        if "debian-security" not in s.uri:
            return s.uri.rstrip("/")
    return FALLBACK_MIRROR


def bootstrap_key(spec: Bootstrap, mirror: str, purpose: str, pins: Mapping[str, str] | None = None) -> str:
    doc = {
        "upstream": dict(sorted((pins or {}).items())),
        "distro": spec.distro,
        "suite": spec.suite,
        "mirror": mirror,
        "variant": spec.variant,
        "include": sorted(spec.include),
        "purpose": purpose,
        "format": "bake.bootstrap/v2",
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def mmdebstrap_argv(spec: Bootstrap, mirror: str, out: Path, *, container: bool) -> tuple[str, ...]:
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
    argv += [spec.suite, str(out), mirror]
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
