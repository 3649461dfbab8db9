"""The generic bake loop with a target plugged in from outside bake (tests/unit/targets/
fake_target.py, registered with one line): bake, verify, record, reuse, fail, publish."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from bake import targets
from bake.app.publish import find_published, publish_records
from bake.app.session import RegistryAccess, Session
from bake.attest.keys import write_keypair
from bake.errors import VerifyError
from bake.infra.packer import PackerInfo
from bake.plan import Plan, plan_recipe
from bake.record import BuildRecord, find_good, load
from bake.registry import client
from bake.registry.backend import open_registry
from bake.targets import loop
from bake.targets.base import BakeContext, Outcome
from bake.ui.progress import PlainReporter
from tests.unit.targets.fake_target import Fake, FakeSession, FakeTools

RECIPE = """\
name: note
version: 1.0.0
base: {image: "scratch@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
targets:
  fake: {greeting: hi}
steps:
  - shell: echo baking
verify:
  - file: {path: /note.txt, contains: hi}
  - name: only where containers run
    when: target == 'docker'
    command: {run: "true"}
  - command: {run: cat /note.txt}
"""


@pytest.fixture(autouse=True)
def fake_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(targets.TARGETS, "fake", "tests.unit.targets.fake_target:Fake")  # the one line


def plan_of(folder: Path) -> Plan:
    recipe = folder / "note.yaml"
    recipe.write_text(RECIPE)
    (plan,) = plan_recipe(recipe, PackerInfo((1, 6, 6)), targets=["fake"])
    return plan


def bake(state: Path, plan: Plan, tools: FakeTools) -> Outcome:
    ctx = BakeContext(runner=tools, state=state, reporter=PlainReporter(), environ={})
    target = targets.get("fake")
    with target.session(ctx) as session:
        return loop.bake(target, session, ctx, plan)


def test_a_plugged_in_target_is_baked_verified_and_recorded(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    tools = FakeTools()
    out = bake(tmp_path / "state", plan, tools)
    rec = out.record
    assert rec.good and rec.target == "fake" and not out.cached
    assert Path(rec.artifact.id).read_text() == "hi from 1 steps\n"  # the template saw its config
    assert rec.verify["passed"] == 2 and rec.verify["failed"] == 0 and rec.verify["skipped"] == 1
    skipped = [r for r in rec.verify["results"] if r["outcome"] == "skipped"]
    assert [r["title"] for r in skipped] == ["only where containers run"]
    assert "is false for target fake" in skipped[0]["message"]
    assert [c.get("name") for c in rec.verify["checks"]] == [None, None]  # what drift would re-run
    # the record is the target's to write and read
    assert load(out.record_path).to_json() == rec.to_json()
    found = find_good(tmp_path / "state", "note", "fake", plan.key)
    assert found is not None and found.artifact == rec.artifact
    # Packer ran once, with the template from beside the plug-in's module
    (packer_call,) = [c for c in tools.calls if c.argv[:2] == ("packer", "build")]
    template = Path(packer_call.argv[-1]).read_text()
    assert 'source "null" "note"' in template and "greeting" in template
    # for provenance: when it began, its own id, what it read and rendered
    assert rec.started is not None and rec.started <= rec.created
    assert rec.invocation_id and len(rec.invocation_id) == 36
    assert set(rec.sources) == {"recipe-file:note.yaml"}
    packer_file = Path(packer_call.argv[-1]).name
    assert (
        rec.byproducts[f"packer:{packer_file}"] == "sha256:" + hashlib.sha256(template.encode()).hexdigest()
    )


def test_every_bake_has_its_own_invocation_id(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    first = bake(tmp_path / "a", plan, FakeTools()).record
    second = bake(tmp_path / "b", plan, FakeTools()).record
    assert first.bake_key == second.bake_key and first.invocation_id != second.invocation_id


def test_a_record_from_before_runs_had_ids_still_loads(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    out = bake(tmp_path / "state", plan, FakeTools())
    doc = out.record.to_json()
    for added in ("started", "invocation_id", "sources", "byproducts"):
        del doc[added]
    old = BuildRecord.from_json(doc)
    assert old.started is None and old.invocation_id is None and old.sources == {} and old.byproducts == {}


def test_a_good_bake_whose_artifact_is_there_is_reused(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    first = bake(tmp_path / "state", plan, FakeTools())
    tools = FakeTools()
    again = bake(tmp_path / "state", plan, tools)
    assert again.cached and again.record.to_json() == first.record.to_json() and tools.calls == []
    Path(first.record.artifact.id).unlink()  # gone: baked again
    assert not bake(tmp_path / "state", plan, FakeTools()).cached


def test_a_failing_check_records_a_failed_bake_and_discards_the_artifact(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    with pytest.raises(VerifyError) as info:
        bake(tmp_path / "state", plan, FakeTools(failing="file /note.txt (contains=hi)"))
    assert "1 of 3 verify checks failed" in info.value.message
    assert find_good(tmp_path / "state", "note", "fake", plan.key) is None
    failed = load(
        tmp_path / "state" / "records" / "note" / "fake" / f"{plan.key.removeprefix('sha256:')}.json"
    )
    assert failed.status == "failed" and failed.verify["failed"] == 1
    assert not Path(failed.artifact.id).exists()  # discarded: nothing can reuse or publish it


def test_verify_only_checks_an_existing_artifact(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    given = tmp_path / "given.txt"
    given.write_text("hi\n")
    ctx = BakeContext(runner=FakeTools(), state=tmp_path / "state", reporter=PlainReporter(), environ={})
    report = loop.verify_only(FakeSession(ctx), plan, str(given))
    assert report.ok and [r.outcome for r in report.results] == ["passed", "passed", "skipped"]


def test_a_plugged_in_target_publishes_through_the_same_path(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    state = tmp_path / "state"
    rec = bake(state, plan, FakeTools()).record
    private, public = write_keypair(tmp_path / "k", None)
    env = {"BAKE_STATE_DIR": str(state), "BAKE_KEY_PASSPHRASE": ""}
    session = Session.load(tmp_path, env)
    access = RegistryAccess(f"dir:{tmp_path / 'registry'}", (str(public),), str(private))
    (pub,) = publish_records(session, [rec], access)
    assert pub.digest == rec.artifact.digest and set(pub.attestations) == {"provenance", "test-result"}
    reg = open_registry(access.url or "")
    snap = client.read(reg, client.Trust((public,), tmp_path / "reader"))
    out = snap.image("note").versions[pub.version].targets["fake"]
    assert out.files == {"file": rec.artifact.digest}
    assert (
        tmp_path / "registry" / "blobs" / "sha256" / rec.artifact.digest.removeprefix("sha256:")
    ).is_file()
    assert Fake().usage({"file": Path("x")}) == "cat x"


CHILD = """\
name: child
version: 2.0.0
extends: note
targets:
  fake: {greeting: hello}
steps:
  - shell: echo more
verify:
  - command: {run: "true"}
"""


def test_a_parent_the_registry_holds_is_fetched_by_digest_not_baked(tmp_path: Path) -> None:
    """A fresh runner (new state folder) bakes a child of a published parent: the parent's
    exact published bytes are fetched and built on; Packer runs for the child only, and the
    child's provenance names the parent's published digest."""
    parent = plan_of(tmp_path)
    first = tmp_path / "first-runner"
    rec = bake(first, parent, FakeTools()).record
    private, public = write_keypair(tmp_path / "k", None)
    access = RegistryAccess(f"dir:{tmp_path / 'registry'}", (str(public),), str(private))
    env = {"BAKE_KEY_PASSPHRASE": ""}
    publish_records(Session.load(tmp_path, {**env, "BAKE_STATE_DIR": str(first)}), [rec], access)

    (tmp_path / "child.yaml").write_text(CHILD)
    (child,) = plan_recipe(tmp_path / "child.yaml", PackerInfo((1, 6, 6)), targets=["fake"])
    fresh = tmp_path / "fresh-runner"
    session = Session.load(tmp_path, {**env, "BAKE_STATE_DIR": str(fresh)})
    tools = FakeTools()
    ctx = BakeContext(
        runner=tools,
        state=fresh,
        reporter=PlainReporter(),
        environ={},
        published=find_published(session, access),
    )
    target = targets.get("fake")
    with target.session(ctx) as tsession:
        out = loop.bake(target, tsession, ctx, child)
    builds = [c for c in tools.calls if c.argv[:2] == ("packer", "build")]
    assert len(builds) == 1 and "child" in builds[0].argv[-1]
    assert out.parents == () and out.record.parent is not None
    assert out.record.parent["digest"] == rec.artifact.digest
    fetched = Path(out.record.parent["artifact"])
    assert fetched.read_bytes() == Path(rec.artifact.id).read_bytes() and fresh in fetched.parents
    (pub,) = publish_records(session, [out.record], access)
    snap = client.read(open_registry(access.url or ""), client.Trust((public,), tmp_path / "reader"))
    assert snap.image("child").versions[pub.version].parent == "note@1.0.0+1"
    provenance = json.loads(
        snap.attestation("child", pub.version, "provenance", pub.attestations["provenance"])
    )
    statement = json.loads(base64.b64decode(provenance["payload"]))
    assert str(rec.artifact.digest).removeprefix("sha256:") in json.dumps(statement["predicate"])


def test_a_parent_not_in_the_registry_is_baked_first(tmp_path: Path) -> None:
    plan_of(tmp_path)
    (tmp_path / "child.yaml").write_text(CHILD)
    (child,) = plan_recipe(tmp_path / "child.yaml", PackerInfo((1, 6, 6)), targets=["fake"])
    tools = FakeTools()
    ctx = BakeContext(
        runner=tools, state=tmp_path / "s", reporter=PlainReporter(), environ={}, published=lambda p: None
    )
    target = targets.get("fake")
    with target.session(ctx) as tsession:
        out = loop.bake(target, tsession, ctx, child)
    assert [r.name for r in out.parents] == ["note"]
    assert len([c for c in tools.calls if c.argv[:2] == ("packer", "build")]) == 2
