"""bake.deploy.deployments: a signed, chained deployment log in a real (dir:) registry."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from bake.attest.digest import sha256_bytes
from bake.attest.keys import SigningKey
from bake.deploy import deployments as log
from bake.deploy.deployments import Deployment
from bake.errors import BakeError, TrustError
from bake.registry import client
from bake.registry.client import Snapshot
from bake.registry.layout import stored_target
from bake.registry.model import ImageDoc
from tests.unit.registry.regs import Setup, now, publish, setup

D = {n: "sha256:" + str(n) * 64 for n in range(1, 5)}
AT = "2024-05-01T12:00:00Z"


def draft(
    to: int | None, frm: int | None = None, *, outcome: str = "succeeded", action: str = "rollout"
) -> Deployment:
    return Deployment(
        service="web",
        action=action,
        outcome=outcome,
        at=AT,
        spec="web@stable",
        image="web",
        version="1.0.0+1",
        from_digest=D[frm] if frm else None,
        to_digest=D[to] if to else None,
        reason="2/2 tasks healthy",
        cluster="swarm1",
    )


def append(s: Setup, record: Deployment) -> Deployment:
    done: list[Deployment] = []

    def mutate(snapshot: Snapshot) -> tuple[Mapping[str, ImageDoc], Mapping[str, bytes]]:
        rec, files = log.append(log.read_index(snapshot), record, s.key)
        done.append(rec)
        return {}, files

    client.transact(s.reg, s.trust(), s.signers, mutate, now=now())
    return done[-1]


@pytest.fixture
def reg(tmp_path: Path) -> Setup:
    s = setup(tmp_path)
    publish(s)  # a registry with an image: the images role and its keys exist
    return s


def test_records_are_appended_signed_and_chained(reg: Setup) -> None:
    first = append(reg, draft(1))
    second = append(reg, draft(2, 1))
    assert (first.seq, first.previous) == (1, None) and second.seq == 2 and second.signer == reg.key.keyid
    snap = reg.read("reader")
    assert log.read_log(snap, "web") == [first, second]
    assert log.read_log(snap, "api") == []
    index = log.read_index(snap)
    assert index["web"].count == 2
    stored = snap.target(log.record_path("web", 2))
    assert stored is not None and index["web"].head == sha256_bytes(stored) == sha256_bytes(stored)
    assert second.previous == sha256_bytes(snap.target(log.record_path("web", 1)) or b"")
    envelope = json.loads(stored)
    assert envelope["payloadType"] == log.PAYLOAD_TYPE and envelope["signatures"][0]["keyid"] == reg.key.keyid


def test_a_reason_is_one_line_in_the_record(reg: Setup) -> None:
    rec = append(reg, replace(draft(1), reason="failed:\n\x1b[31mred\x1b[0m\ttext"))
    assert rec.reason == "failed:  [31mred [0m text"
    assert log.read_log(reg.read("reader"), "web")[0].reason == rec.reason


def test_a_tampered_record_is_refused(reg: Setup) -> None:
    append(reg, draft(1))
    append(reg, draft(3, 1, outcome="rolled-back"))
    snap = reg.read("reader")
    data = snap.target(log.record_path("web", 2))
    assert data is not None
    envelope = json.loads(data)
    payload = base64.b64decode(envelope["payload"]).replace(b"rolled-back", b"succeeded")
    forged = json.dumps({**envelope, "payload": base64.b64encode(payload).decode()}).encode()
    where = (
        reg.base
        / "reg"
        / "targets"
        / stored_target(log.record_path("web", 2), sha256_bytes(data).removeprefix("sha256:"))
    )
    assert where.read_bytes() == data
    where.write_bytes(forged)
    with pytest.raises(TrustError, match=r"has the content of|does not match its signed metadata"):
        log.read_log(reg.read("fresh"), "web")
    # without the TUF metadata, the envelope's own signature gives it away
    with pytest.raises(TrustError, match=r"tampered|signature"):
        log.open_record(forged, [reg.key.public], "record 2")


def test_records_signed_by_a_stranger_are_refused(reg: Setup) -> None:
    stranger = SigningKey.generate()
    record = replace(draft(1), seq=1, signer=stranger.keyid)
    data = log.sign_record(record, stranger)
    with pytest.raises(TrustError, match="no valid signature by a trusted key"):
        log.open_record(data, [reg.key.public], "record 1")
    # a record claiming a trusted signer but signed by another key
    claimed = log.sign_record(replace(record, signer=reg.key.keyid), stranger)
    with pytest.raises(TrustError):
        log.open_record(claimed, [reg.key.public], "record 1")


def test_the_chain_shows_dropped_reordered_or_replaced_records() -> None:
    key = SigningKey.generate()
    one = log.sign_record(replace(draft(1), seq=1, signer=key.keyid), key)
    two = log.sign_record(replace(draft(2, 1), seq=2, previous=sha256_bytes(one), signer=key.keyid), key)
    head = log.Head(2, sha256_bytes(two))
    assert [r.seq for r in log.verify_chain("web", head, [one, two], [key.public])] == [1, 2]
    with pytest.raises(TrustError, match="out of place"):
        log.verify_chain("web", head, [two, one], [key.public])
    with pytest.raises(TrustError, match="does not end where its index says"):
        log.verify_chain("web", head, [one], [key.public])
    other = log.sign_record(replace(draft(3, 1), seq=2, previous=sha256_bytes(one), signer=key.keyid), key)
    with pytest.raises(TrustError, match="does not end where"):
        log.verify_chain("web", head, [one, other], [key.public])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("outcome", "great"),
        ("to", "sha256:abc"),
        ("reason", "two\nlines"),
        ("service", "../etc"),
        ("seq", 0),
        ("at", "yesterday"),
    ],
)
def test_malformed_records_are_refused(field: str, value: object) -> None:
    doc = {**replace(draft(1), seq=1, signer="a" * 64).to_json(), field: value}
    with pytest.raises(TrustError):
        Deployment.from_json(doc, "record")


def test_a_malformed_index_is_refused() -> None:
    with pytest.raises(TrustError):
        log.decode_index(b'{"schema": "bake.deployments/v1", "services": {"web": {"count": 0, "head": "x"}}}')
    with pytest.raises(TrustError):
        log.decode_index(b"[]")
    index = {"web": log.Head(3, D[1])}
    assert log.decode_index(log.encode_index(index)) == index


# --------------------------------------------------------------------------- undo


def records(*rows: Deployment) -> list[Deployment]:
    return [replace(r, seq=i) for i, r in enumerate(rows, 1)]


def test_undo_goes_back_past_failed_attempts() -> None:
    rows = records(draft(1), draft(2, 1), draft(3, 2, outcome="rolled-back"))
    assert log.undo_target(rows, "swarm1", D[2]).to_digest == D[1]


def test_undo_after_undo_goes_further_back() -> None:
    rows = records(draft(1), draft(2, 1), draft(3, 2), draft(2, 3, action="undo"))
    assert log.undo_target(rows, "swarm1", D[2]).to_digest == D[1]
    rows.append(replace(draft(1, 2, action="undo"), seq=5))
    with pytest.raises(BakeError, match="nothing to undo") as e:
        log.undo_target(rows, "swarm1", D[1])
    assert e.value.hint is not None and "NAME@VERSION" in e.value.hint


def test_undo_of_a_service_changed_outside_bake_returns_to_the_last_known_good() -> None:
    rows = records(draft(1), draft(2, 1))
    assert log.undo_target(rows, "swarm1", D[4]).to_digest == D[2]


def test_undo_stays_within_one_swarm() -> None:
    rows = records(replace(draft(1), cluster="other"), draft(2, 1))
    with pytest.raises(BakeError, match="nothing to undo"):
        log.undo_target(rows, "swarm1", D[2])
