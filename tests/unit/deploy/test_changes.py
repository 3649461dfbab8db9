"""bake.deploy.changes: promote, rollback and revoke planned as pure changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bake.deploy import changes
from bake.errors import BakeError
from bake.registry import model
from bake.registry.model import ImageDoc
from tests.unit.deploy.docs import at, build, release, snap

# --------------------------------------------------------------------------- planners


def test_plan_promote_and_rollback(web: ImageDoc) -> None:
    change = changes.plan_promote(snap(web), "web@1.4.0", "stable", at=at(2))
    assert change.summary == ("web@stable: 1.4.0+1 -> 1.4.0+2",)
    promoted = change.docs["web"]
    assert changes.plan_promote(snap(promoted), "web@1.4.0+2", "stable", at=at(3)).docs == {}
    back = changes.plan_rollback(snap(promoted), "web", "stable", at=at(4))
    assert back.summary == ("web@stable: 1.4.0+2 -> 1.4.0+1 (rollback)",)


def test_plan_revoke_cascades_and_warns_about_channels(web: ImageDoc) -> None:
    base = build(model.new_image_doc("base"), release("base", "1.0.0", "base"))
    child = replace(release("web", "2.0.0", "child"), parent="base@1.0.0+1")
    web = model.promote(build(web, child), "2.0.0", "edge", at=at(2))

    change = changes.plan_revoke(snap(base, web), "base@1.0.0", "CVE", at=at(3))

    assert set(change.docs) == {"base", "web"}
    assert change.summary == (
        "revoked base@1.0.0+1: CVE",
        "revoked web@2.0.0+1 (built from a revoked image)",
        "warning: web@edge now points to revoked 2.0.0+1; roll it back: bake rollback web edge",
    )
    alone = changes.plan_revoke(snap(base, web), "base@1.0.0+1", "CVE", at=at(3), cascade_children=False)
    assert set(alone.docs) == {"base"}
    with pytest.raises(BakeError, match="revoke needs a version"):
        changes.plan_revoke(snap(web), "web@stable", "x", at=at(3))
