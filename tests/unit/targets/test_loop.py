"""The generic bake loop with a target plugged in from outside bake (tests/unit/targets/
fake_target.py, registered with one line): bake, verify, record, reuse, fail, publish."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bake import targets
from bake.app.publish import publish_records
from bake.app.session import RegistryAccess, Session
from bake.attest.keys import write_keypair
from bake.errors import VerifyError
from bake.infra.packer import PackerInfo
from bake.plan import Plan, plan_recipe
from bake.record import BuildRecord, find_good, load
from bake.registry import client
from bake.registry.backend import open_registry
from bake.registry.trust import trusted_keys
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
    snap = client.read(reg, trusted_keys([str(public)]), state=None, now=session.now())
    out = snap.image("note").versions[pub.version].targets["fake"]
    assert out.files == {"file": rec.artifact.digest}
    assert (
        tmp_path / "registry" / "blobs" / "sha256" / rec.artifact.digest.removeprefix("sha256:")
    ).is_file()
    assert Fake().usage({"file": Path("x")}) == "cat x"
