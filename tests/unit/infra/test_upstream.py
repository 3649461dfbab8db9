from __future__ import annotations

import urllib.error

import pytest

from bake.errors import BakeError
from bake.infra.packer import PackerInfo
from bake.infra.upstream import Upstream, hashed_url
from bake.plan import plan_recipe, upstream_pins
from bake.recipe.models import Bootstrap
from tests.conftest import RECIPES


def test_one_request_per_suite_and_the_key_follows_upstream() -> None:
    served = {"state": b"Release v1"}
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return served["state"]

    up = Upstream(fetch=fetch, mirror_for=lambda suite: "http://mirror.invalid/debian")
    info = PackerInfo((1, 6, 6))
    (web1,) = plan_recipe(RECIPES / "web.yaml", info, targets=["docker"], upstream=up)
    (app1,) = plan_recipe(RECIPES / "app.yaml", info, targets=["docker"], upstream=up)
    assert calls == ["http://mirror.invalid/debian/dists/bookworm/InRelease"]  # cached per process
    pins = upstream_pins(web1)
    assert list(pins) == ["upstream:http://mirror.invalid/debian/dists/bookworm"]
    served["state"] = b"Release v2"  # upstream packages changed overnight
    up2 = Upstream(fetch=fetch, mirror_for=lambda suite: "http://mirror.invalid/debian")
    (web2,) = plan_recipe(RECIPES / "web.yaml", info, targets=["docker"], upstream=up2)
    assert web2.key != web1.key and web2.parent is not None and web1.parent is not None
    assert web2.parent.key != web1.parent.key
    assert app1.key != web1.key


def test_falls_back_to_release_then_fails_clearly() -> None:
    def fetch(url: str) -> bytes:
        if url.endswith("InRelease"):
            raise urllib.error.URLError("404")
        return b"plain Release"

    up = Upstream(fetch=fetch, mirror_for=lambda suite: "http://m.invalid/debian")
    (name, digest), *_ = up(Bootstrap()).items()
    assert digest.startswith("sha256:")
    # the name says which file was hashed: provenance names it by its URL
    assert name == "upstream:http://m.invalid/debian/dists/bookworm/Release"
    assert hashed_url(name) == "http://m.invalid/debian/dists/bookworm/Release"
    assert hashed_url("upstream:http://m.invalid/debian/dists/bookworm") == (
        "http://m.invalid/debian/dists/bookworm/InRelease"
    )

    def down(url: str) -> bytes:
        raise urllib.error.URLError("unreachable")

    with pytest.raises(BakeError, match=r"cannot read the state of http://m\.invalid/debian bookworm"):
        Upstream(fetch=down, mirror_for=lambda suite: "http://m.invalid/debian")(Bootstrap())
