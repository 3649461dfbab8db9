"""Upstream package sources as bake inputs.

A nightly bake should rebuild exactly when the packages it installs changed upstream. For
a Debian mirror that state is summed up by the suite's InRelease file (it lists the digest
of every package index), so its sha256 — one small request per suite — goes into the bake
key of the base recipe, and through the parent keys into every descendant.

The input is named after the suite, ``upstream:MIRROR/dists/SUITE``, and then holds the
digest of ``…/InRelease``; a mirror without an InRelease file is hashed by its
``Release``, and the input is then named ``upstream:MIRROR/dists/SUITE/Release``, so that
the name always says which file the digest is of (:func:`hashed_url`).
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from bake.errors import BakeError
from bake.recipe.models import Bootstrap
from bake.targets.bootstrap import host_sources, pick_mirror

Fetch = Callable[[str], bytes]
TIMEOUT = 20.0


def http_fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "bake"})  # noqa: S310 - http(s) mirror URLs only
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - as above
        data: bytes = response.read()
        return data


def input_name(mirror: str, suite: str, leaf: str = "InRelease") -> str:
    name = f"upstream:{mirror.rstrip('/')}/dists/{suite}"
    return name if leaf == "InRelease" else f"{name}/{leaf}"


def hashed_url(name: str) -> str:
    """The URL of the file whose digest the upstream input *name* holds."""
    url = name.removeprefix("upstream:")
    return url if url.endswith("/Release") else f"{url}/InRelease"


@dataclass
class Upstream:
    """Release-file digests, fetched once per (mirror, suite) per process."""

    fetch: Fetch = http_fetch
    mirror_for: Callable[[str], str] = field(default=lambda suite: pick_mirror(host_sources(), suite))
    cache: dict[str, tuple[str, str]] = field(default_factory=dict)  # suite URL -> (leaf, digest)

    def __call__(self, spec: Bootstrap) -> dict[str, str]:
        mirror = (spec.mirror or self.mirror_for(spec.suite)).rstrip("/")
        if not mirror.startswith(("http://", "https://")):
            return {}
        key = f"{mirror}/dists/{spec.suite}"
        if key not in self.cache:
            self.cache[key] = self._digest(mirror, spec.suite)
        leaf, digest = self.cache[key]
        return {input_name(mirror, spec.suite, leaf): digest}

    def _digest(self, mirror: str, suite: str) -> tuple[str, str]:
        errors = []
        for leaf in ("InRelease", "Release"):
            url = f"{mirror}/dists/{suite}/{leaf}"
            try:
                return leaf, "sha256:" + hashlib.sha256(self.fetch(url)).hexdigest()
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {exc}")
        raise BakeError(
            f"cannot read the state of {mirror} {suite}: " + "; ".join(errors),
            "check the mirror, or pass --offline to leave upstream state out of the bake key",
        )


def offline(_spec: Bootstrap) -> dict[str, str]:
    """Leave upstream state out of the key (no network)."""
    return {}
