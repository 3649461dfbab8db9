"""bake.deploy.catalog.pages: statuses (the test gate, as a reviewer sees it) and walks."""

from __future__ import annotations

from dataclasses import replace

from bake.deploy.catalog.facts import Attested, Check, Checked, Facts
from bake.deploy.catalog.pages import ImageWalk, ordered, parent_link, version_status, worst
from bake.deploy.catalog.pictures import children_index
from bake.deploy.outdated import find_outdated
from bake.registry import model
from tests.unit.deploy.catalog.site import Built
from tests.unit.deploy.docs import at, build, release

REQUIRED = ("provenance", "test-result")
PASSED = Checked("PASSED", (Check("a", "passed"), Check("b", "skipped")), "[]")


def doc_and_build() -> tuple[model.ImageDoc, model.Build]:
    doc = build(model.new_image_doc("web"), release("web", "1.0.0", "a"))
    b = doc.versions["1.0.0+1"]
    return doc, replace(
        b, attestations={"provenance": b.attestations["provenance"], "test-result": "sha256:x"}
    )


def test_version_status_follows_the_gate() -> None:
    doc, b = doc_and_build()
    assert version_status(doc, b, Facts(tests=PASSED), REQUIRED).state == "passed"
    failed = Checked("FAILED", (Check("a", "failed"),), "[]")
    assert version_status(doc, b, Facts(tests=failed), REQUIRED).text.endswith("(1 failed)")
    assert version_status(doc, b, Facts(), REQUIRED).state == "untested"
    bad = Facts((Attested("sbom", "sha256:x", error="no valid signature"),), tests=PASSED)
    assert version_status(doc, b, bad, REQUIRED).state == "untrusted"
    no_prov = replace(b, attestations={"test-result": "sha256:x"})
    assert version_status(doc, no_prov, Facts(tests=PASSED), REQUIRED).state == "incomplete"
    revoked = model.revoke(doc, "1.0.0+1", "CVE", at=at(1))
    status = version_status(revoked, b, bad, REQUIRED)
    assert status.state == "revoked" and "CVE" in status.text


def test_worst_state_wins() -> None:
    assert worst(["passed", "revoked", "incomplete"]) == "revoked"
    assert worst(["passed", "untrusted"]) == "untrusted" and worst([]) == "untested"


def test_ordered_leaves_out_versions_that_are_no_semver() -> None:
    doc = build(model.new_image_doc("web"), release("web", "1.10.0", "a"), release("web", "1.9.0", "b"))
    bad = replace(doc.versions["1.9.0+1"], version="1.9.0<x>")
    doc = replace(doc, versions={**doc.versions, "1.9.0<x>+1": bad})
    problems: list[str] = []
    assert [b.full_version for b in ordered(doc, problems)] == ["1.9.0+1", "1.10.0+1"]
    assert len(problems) == 1 and "1.9.0<x>+1" in problems[0]


def test_parent_link_only_for_valid_refs() -> None:
    assert parent_link("base@1.0.0+1") == ("base", "1.0.0+1")
    assert parent_link("Base/../x@1") is None and parent_link(None) is None and parent_link("x@<b>") is None


def test_a_walk_compares_each_version_with_the_one_before(built: Built) -> None:
    snap = built.snapshot
    docs = {n: snap.image(n) for n in snap.names()}
    parents = {"web": ["debian-base"], "app": ["web"]}
    walk = ImageWalk(
        snap,
        docs["web"],
        parents=parents,
        children=children_index(parents),
        outdated=find_outdated(snap),
        now="x",
    )
    pages = list(walk.versions())
    assert [p.version for p in pages] == ["1.0.0+1", "1.1.0+1"]
    first, second = pages
    assert first.previous is None and first.package_diff is None
    assert second.previous == "1.0.0+1"
    assert second.package_diff is not None
    assert [c.name for c in second.package_diff.upgraded] == ["nginx-light"]
    assert second.file_diff is not None and [c.path for c in second.file_diff.added] == [
        "/srv/www/index.html"
    ]
    assert second.status.state == "revoked" and second.channels == ("beta",)
    assert walk.page is not None and walk.row is not None
    assert [r.version for r in walk.page.rows] == ["1.1.0+1", "1.0.0+1"]  # newest first
    assert walk.row.state == "revoked" and walk.row.outdated and walk.row.revoked == 1
    assert dict((c, v) for c, v, _s in walk.row.heads) == {"beta": "1.1.0+1", "stable": "1.0.0+1"}
