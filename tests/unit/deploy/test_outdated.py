from __future__ import annotations

from datetime import UTC, datetime

from bake.deploy.outdated import find_outdated
from bake.registry.client import Snapshot
from bake.registry.model import Release, TargetOutput, add_build, new_image_doc, promote

AT = datetime(2026, 11, 1, tzinfo=UTC)
D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")


def release(name: str, version: str, key: str, digest: str, parent: str | None = None) -> Release:
    return Release(name, version, key, AT, {"docker": TargetOutput(digest, None, None, None)}, parent=parent)


def test_channel_head_on_an_older_parent_is_outdated() -> None:
    base, v1 = add_build(new_image_doc("base"), release("base", "1.0.0", "sha256:" + "1" * 64, D1))
    web, w1 = add_build(new_image_doc("web"), release("web", "2.0.0", "sha256:" + "2" * 64, D2, f"base@{v1}"))
    web = promote(web, w1, "stable", at=AT)
    snap = Snapshot.of([base, web], url="dir:/x", serial=1)
    assert find_outdated(snap) == []
    base, v2 = add_build(base, release("base", "1.1.0", "sha256:" + "3" * 64, D3))
    found = find_outdated(Snapshot.of([base, web], url="dir:/x", serial=2))
    assert [(f.name, f.channel, f.newer) for f in found] == [("web", "stable", f"base@{v2}")]
