"""A tiny Semantic Versioning 2.0.0 helper: parse, validate, order.

Precedence follows semver.org section 11: major.minor.patch numerically, a pre-release
sorts before its release, pre-release identifiers compare numerically when numeric and
lexically otherwise (numeric < alphanumeric), and build metadata is *ignored* for
precedence. The registry uses build metadata as a build number (``1.4.0+2``); it orders
builds of one version with :func:`build_number`, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bake.errors import BakeError

# The official regular expression from semver.org, minus the optional leading "v".
_SEMVER = re.compile(
    r"(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)

PreKey = tuple[tuple[int, int, str], ...]


# A malformed version is a usage error: exit 2, like an invalid recipe.
_USAGE = 2


@dataclass(frozen=True)
class Version:
    """A parsed semantic version. Compare with :meth:`precedence`, not ``==``."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    @property
    def core(self) -> str:
        """The version without build metadata: ``1.4.0`` or ``1.4.0-rc.1``."""
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text

    def __str__(self) -> str:
        return f"{self.core}+{'.'.join(self.build)}" if self.build else self.core

    def precedence(self) -> tuple[int, int, int, int, PreKey]:
        """A sort key that implements semver precedence (build metadata ignored)."""
        pre: PreKey = tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part) for part in self.prerelease
        )
        # A release (no pre-release) sorts after every pre-release of the same core.
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)


def parse(text: str, *, what: str = "version") -> Version:
    """Parse ``text`` as a semantic version or raise :class:`BakeError` (exit 2)."""
    match = _SEMVER.fullmatch(text)
    if match is None:
        hint = "use MAJOR.MINOR.PATCH, e.g. 1.4.0, 1.4.0-rc.1 or 1.4.0+2"
        if text[:1] in ("v", "V") and _SEMVER.fullmatch(text[1:]):
            hint = f"drop the leading 'v': {text[1:]}"
        raise BakeError(f"{what} {text!r} is not a semantic version", hint, _USAGE)
    pre, build = match.group("pre"), match.group("build")
    return Version(
        major=int(match.group("major")),
        minor=int(match.group("minor")),
        patch=int(match.group("patch")),
        prerelease=tuple(pre.split(".")) if pre else (),
        build=tuple(build.split(".")) if build else (),
    )


def is_version(text: str) -> bool:
    """True when ``text`` is a valid semantic version (with or without build metadata)."""
    return _SEMVER.fullmatch(text) is not None


def build_number(version: Version) -> int | None:
    """The registry build number (``1.4.0+2`` -> 2), None without build metadata.

    Raises :class:`BakeError` when the build metadata is not one positive integer: in a
    registry, ``+N`` is assigned by the registry and nothing else is accepted.
    """
    if not version.build:
        return None
    if len(version.build) == 1 and version.build[0].isdigit() and version.build[0][0] != "0":
        return int(version.build[0])
    raise BakeError(
        f"build {'.'.join(version.build)!r} of {version} is not a build number",
        "registry builds are numbered 1, 2, 3 …: write e.g. "
        f"{version.core}+1, or {version.core} for its latest build",
        _USAGE,
    )
