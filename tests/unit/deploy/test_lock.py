"""bake.deploy.lock: pins, lock files, and checking them against a snapshot."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from bake.deploy import lock as lockfile
from bake.deploy import resolve as deploy
from bake.deploy.lock import Finding, LockFile
from bake.errors import BakeError
from bake.registry import model
from bake.registry.model import ImageDoc
from tests.unit.deploy.docs import T0, URL, at, build, d, release, snap

# --------------------------------------------------------------------------- lock file


def test_pin_adds_and_replaces(web: ImageDoc) -> None:
    s = snap(web)
    lock = lockfile.pin(LockFile(), deploy.resolve(s, "web@stable", "docker"), URL, T0)
    lock = lockfile.pin(lock, deploy.resolve(s, "web@1.3.0", "qemu"), URL, T0)
    lock = lockfile.pin(lock, deploy.resolve(s, "web@1.4.0", "docker"), URL, at(5))
    assert [(p.target, p.spec, p.version, p.pinned_at) for p in lock.pins] == [
        ("docker", "web@1.4.0", "1.4.0+2", "2024-05-01T12:05:00Z"),
        ("qemu", "web@1.3.0", "1.3.0+1", "2024-05-01T12:00:00Z"),
    ]
    found = lock.find("web", "docker")
    assert found is not None and found.digest == d("c")


def _pinned(web: ImageDoc, spec: str, target: str = "docker") -> LockFile:
    return lockfile.pin(LockFile(), deploy.resolve(snap(web), spec, target), URL, T0)


def no_gate(_res: object, _snapshot: object) -> None:
    """The pure logic of lock checks; the test gate has tests of its own."""


check = partial(lockfile.check_lock, gate=no_gate)


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.severity) for f in findings]


def test_check_lock_clean(web: ImageDoc) -> None:
    assert check(_pinned(web, "web@stable"), snap(web)) == []


def test_check_lock_revoked_pin(web: ImageDoc) -> None:
    lock = _pinned(web, "web@1.4.0+1")
    later = model.revoke(web, "1.4.0+1", "CVE-9", at=at(9))
    findings = check(lock, snap(later))
    assert kinds(findings) == [("revoked", "error"), ("unresolvable", "warning")]
    assert findings[0].message == ("web@1.4.0+1 (docker) was revoked at 2024-05-01T12:09:00Z: CVE-9")


def test_check_lock_outdated_channel_and_build(web: ImageDoc) -> None:
    lock = lockfile.pin(
        _pinned(web, "web@stable"),
        deploy.resolve(snap(web), "web@1.3.0", "qemu"),
        URL,
        T0,
    )
    moved = model.promote(web, "1.4.0+2", "stable", at=at(2))
    moved = build(moved, release("web", "1.3.0", "rebuilt"))
    findings = check(lock, snap(moved))
    assert kinds(findings) == [("outdated", "warning"), ("outdated", "warning")]
    assert findings[0].message == "web@stable now resolves to 1.4.0+2, pinned 1.4.0+1"
    assert findings[1].message == "web@1.3.0 now resolves to 1.3.0+2, pinned 1.3.0+1"


def test_check_lock_missing_and_other_registries(web: ImageDoc) -> None:
    lock = _pinned(web, "web@stable")
    assert kinds(check(lock, snap(model.new_image_doc("api")))) == [("missing", "error")]
    # a pin of another registry (or of this one, moved) is never skipped: it is an error
    other = lockfile.pin(LockFile(), deploy.resolve(snap(web), "web@stable", "docker"), "dir:/x", T0)
    assert kinds(check(other, snap(model.new_image_doc("api")))) == [("unchecked", "error")]


def test_a_pin_refuses_metadata_older_than_it_was_made_from(web: ImageDoc) -> None:
    lock = _pinned(web, "web@stable")
    assert lock.pins[0].metadata == {"root": 1, "timestamp": 7, "snapshot": 7}
    assert check(lock, snap(web, serial=7)) == []
    findings = check(lock, snap(web, serial=5))  # an older state, replayed
    assert kinds(findings) == [("rollback", "error")]
    assert "timestamp 5 < 7" in findings[0].message and "snapshot 5 < 7" in findings[0].message


def test_a_pin_that_fails_the_registrys_test_gate_is_an_error(web: ImageDoc) -> None:
    lock = _pinned(web, "web@stable")
    findings = lockfile.check_lock(lock, snap(web))  # the default gate: web has no test result
    assert kinds(findings) == [("gate", "error")]
    assert "has no test-result attestation" in findings[0].message


def test_check_lock_changed_digest(web: ImageDoc) -> None:
    lock = _pinned(web, "web@stable")
    forged = LockFile((replace(lock.pins[0], digest=d("z")),))
    assert kinds(check(forged, snap(web))) == [("changed", "error")]


def test_lock_file_round_trip(tmp_path: Path, web: ImageDoc) -> None:
    path = tmp_path / lockfile.LOCK_FILE
    assert lockfile.read_lock(path) == LockFile()
    lock = _pinned(web, "web@stable")
    lockfile.write_lock(path, lock)
    assert lockfile.read_lock(path) == lock
    data = json.loads(path.read_text())
    assert data["schema"] == "bake.lock/v2"
    assert data["pins"][0]["metadata"] == {"root": 1, "snapshot": 7, "timestamp": 7}
    assert data["pins"][0]["registry"] == URL
    assert [p.name for p in tmp_path.iterdir()] == ["bake.lock"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": "bake.lock/v1",\n "pins": [}', r"bake\.lock:2:\d+: not valid JSON"),
        ('{"schema": "other"}', "schema must be"),
        ('{"schema": "bake.lock/v1", "pins": []}', r"schema must be 'bake\.lock/v2'"),
        ('{"schema": "bake.lock/v2", "pins": {}}', "pins must be a list"),
        ('{"schema": "bake.lock/v2", "pins": [{"name": 1}]}', r"pins\[0\]\.name must be"),
    ],
)
def test_bad_lock_files_name_the_place(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bake.lock"
    path.write_text(content)
    with pytest.raises(BakeError, match=message) as info:
        lockfile.read_lock(path)
    assert info.value.exit_code == 2
