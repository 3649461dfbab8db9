"""Base root filesystems without an image hub: which Debian mirror, and the bootstrap key.

Bases are bootstrapped with mmdebstrap from a Debian mirror, by default the one in the
host's apt sources (one-line `.list` or deb822 `.sources`). A base is kept by its
bootstrap key (a hash of distro, suite, mirror, variant, packages and what the target
makes of it), so it is rebuilt only when one of those changes. Each bootstrapping target
(a container rootfs, a VM base disk) builds on these.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bake.errors import BakeError
from bake.recipe.models import MIRROR_RE, PACKAGE_RE, SUITE_RE, Bootstrap

SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
FALLBACK_MIRROR = "http://deb.debian.org/debian"


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


def check_inputs(spec: Bootstrap, mirror: str, packages: Iterable[str] = ()) -> None:
    """What mmdebstrap gets from a recipe or the host's apt sources, checked against its
    grammar before any argv is built: a suite is a name, a mirror an http(s) or file URL,
    packages are package names. (A suite `--customize-hook=…` would be an option that runs
    a command on this host; bake also passes ``--`` before mmdebstrap's arguments.)"""
    bad = [
        (what, value)
        for what, pattern, values in (
            ("suite", SUITE_RE, [spec.suite]),
            ("mirror", MIRROR_RE, [mirror]),
            ("package", PACKAGE_RE, [*spec.include, *packages]),
        )
        for value in values
        if not re.fullmatch(pattern, value)
    ]
    if bad:
        what, value = bad[0]
        raise BakeError(
            f"bootstrap {what} {value!r} is not valid",
            "a suite is a name (bookworm), a mirror an http(s):// or file:// URL (set "
            "`bootstrap.mirror` when the host's apt sources have another kind), packages are names",
            exit_code=2,
        )


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
