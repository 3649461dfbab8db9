from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bake import deploy
from bake.deploy import Finding, LockFile, Resolution
from bake.digest import sha256_bytes
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import model
from bake.registry.client import Snapshot
from bake.registry.model import ImageDoc, Release, TargetOutput

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
URL = "dir:/srv/registry"


def d(text: str) -> str:
    return sha256_bytes(text.encode())


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def release(name: str, version: str, out: str, *, ref: str | None = "digest") -> Release:
    if ref == "digest":
        ref = f"r.example/{name}@{d(out)}"
    return Release(
        name=name,
        version=version,
        bake_key=f"key-{out}",
        created=T0,
        targets={
            "docker": TargetOutput(d(out), ref=ref, image_id=d(f"id-{out}")),
            "qemu": TargetOutput(d(f"q-{out}"), artifact_id=f"{name}-{version}.qcow2"),
        },
        attestations={"provenance": d(f"prov-{out}"), "sbom": d(f"sbom-{out}")},
    )


def build(doc: ImageDoc, *releases: Release) -> ImageDoc:
    for r in releases:
        doc, _ = model.add_build(doc, r)
    return doc


@pytest.fixture
def web() -> ImageDoc:
    doc = build(
        model.new_image_doc("web"),
        release("web", "1.3.0", "a"),
        release("web", "1.4.0", "b"),
        release("web", "1.4.0", "c"),
        release("web", "1.5.0", "t", ref="r.example/web:1.5.0"),
    )
    return model.promote(doc, "1.4.0+1", "stable", at=at(1))


def snap(*docs: ImageDoc, serial: int = 7) -> Snapshot:
    return Snapshot.of(docs, url=URL, serial=serial)


# --------------------------------------------------------------------------- resolve


def test_resolve_a_channel(web: ImageDoc) -> None:
    res = deploy.resolve(snap(web), "web@stable", "docker")
    assert res == Resolution(
        name="web",
        spec="web@stable",
        version="1.4.0+1",
        channel="stable",
        target="docker",
        digest=d("b"),
        ref=f"r.example/web@{d('b')}",
        artifact_id=None,
        image_id=d("id-b"),
        bake_key="key-b",
        attestations={"provenance": d("prov-b"), "sbom": d("sbom-b")},
        registry=URL,
        serial=7,
    )


@pytest.mark.parametrize(
    ("spec", "version"),
    [("web@1.4.0", "1.4.0+2"), ("web@1.4.0+1", "1.4.0+1"), ("web@1.3.0", "1.3.0+1")],
)
def test_resolve_versions(web: ImageDoc, spec: str, version: str) -> None:
    res = deploy.resolve(snap(web), spec, "qemu")
    assert (res.version, res.channel, res.ref) == (version, None, None)
    assert res.artifact_id == f"web-{version.partition('+')[0]}.qcow2"


def test_resolve_latest_refuses_a_tag_only_ref(web: ImageDoc) -> None:
    # latest is 1.5.0, whose docker ref names a tag: a tag can move, so it is refused...
    with pytest.raises(TrustError, match=r"'r\.example/web:1\.5\.0', which is not pinned by digest"):
        deploy.resolve(snap(web), "web@latest", "docker")
    # ... while its qemu output has no ref and resolves.
    assert deploy.resolve(snap(web), "web@latest", "qemu").version == "1.5.0+1"


def test_resolve_refuses_unknown_things_with_near_misses(web: ImageDoc) -> None:
    s = snap(web)
    cases = [
        ("wbe@stable", "docker", RegistryError, "no image named 'wbe'", "did you mean 'web'?"),
        ("web@stabel", "docker", RegistryError, "no channel 'stabel'", "did you mean 'stable'?"),
        ("web@1.4.1", "docker", RegistryError, "is not in the registry", "did you mean"),
        ("web@stable", "dokcer", RegistryError, "not built for target", "did you mean 'docker'?"),
        ("web", "docker", BakeError, "not an image spec", "NAME@CHANNEL"),
    ]
    for spec, target, error, message, hint in cases:
        with pytest.raises(error, match=message) as info:
            deploy.resolve(s, spec, target)
        assert info.value.hint is not None and hint in info.value.hint, spec


def test_resolve_refuses_revoked_builds_saying_why_and_when(web: ImageDoc) -> None:
    web = model.revoke(web, "1.4.0+1", "CVE-2024-0001 in openssl", at=at(30))
    with pytest.raises(TrustError) as info:
        deploy.resolve(snap(web), "web@stable", "docker")
    assert str(info.value) == (
        "web@stable points to web@1.4.0+1, which was revoked at 2024-05-01T12:30:00Z: "
        "CVE-2024-0001 in openssl"
    )
    with pytest.raises(TrustError, match="was revoked at"):
        deploy.resolve(snap(web), "web@1.4.0+1", "docker")
    assert deploy.resolve(snap(web), "web@1.4.0", "docker").version == "1.4.0+2"


# --------------------------------------------------------------------------- formats


@pytest.fixture
def res(web: ImageDoc) -> Resolution:
    return deploy.resolve(snap(web), "web@stable", "docker")


def test_format_env(res: Resolution) -> None:
    assert deploy.format_resolution(res, "env") == (
        "BAKE_IMAGE_NAME=web\n"
        "BAKE_IMAGE_VERSION=1.4.0+1\n"
        "BAKE_IMAGE_TARGET=docker\n"
        f"BAKE_IMAGE_DIGEST={d('b')}\n"
        f"BAKE_IMAGE_REF=r.example/web@{d('b')}\n"
    )


def test_format_tfvars(res: Resolution, web: ImageDoc) -> None:
    assert deploy.format_resolution(res, "tfvars") == (
        f'image_ref = "r.example/web@{d("b")}"\nimage_digest = "{d("b")}"\nartifact_id = null\n'
    )
    qemu = deploy.resolve(snap(web), "web@1.3.0", "qemu")
    text = deploy.format_resolution(qemu, "tfvars")
    assert "image_ref = null\n" in text and 'artifact_id = "web-1.3.0.qcow2"\n' in text


def test_tfvars_strings_are_escaped() -> None:
    assert deploy._hcl_string('a"b\\c${x}%{y}') == '"a\\"b\\\\c$${x}%%{y}"'


def test_format_json_and_text(res: Resolution) -> None:
    assert json.loads(deploy.format_resolution(res, "json")) == res.to_json()
    text = deploy.format_resolution(res, "text")
    assert "image:        web@1.4.0+1\n" in text
    assert "channel:      stable\n" in text
    assert f"registry:     {URL} (serial 7)\n" in text
    assert "artifact:" not in text  # unknown values are left out


def test_unknown_format(res: Resolution) -> None:
    with pytest.raises(BakeError, match="unknown output format 'tfvar'") as info:
        deploy.format_resolution(res, "tfvar")
    assert info.value.hint == "did you mean 'tfvars'?"


# --------------------------------------------------------------------------- planners


def test_plan_promote_and_rollback(web: ImageDoc) -> None:
    change = deploy.plan_promote(snap(web), "web@1.4.0", "stable", at=at(2))
    assert change.summary == ("web@stable: 1.4.0+1 -> 1.4.0+2",)
    promoted = change.docs["web"]
    assert deploy.plan_promote(snap(promoted), "web@1.4.0+2", "stable", at=at(3)).docs == {}
    back = deploy.plan_rollback(snap(promoted), "web", "stable", at=at(4))
    assert back.summary == ("web@stable: 1.4.0+2 -> 1.4.0+1 (rollback)",)


def test_plan_revoke_cascades_and_warns_about_channels(web: ImageDoc) -> None:
    base = build(model.new_image_doc("base"), release("base", "1.0.0", "base"))
    child = replace(release("web", "2.0.0", "child"), parent="base@1.0.0+1")
    web = model.promote(build(web, child), "2.0.0", "edge", at=at(2))

    change = deploy.plan_revoke(snap(base, web), "base@1.0.0", "CVE", at=at(3))

    assert set(change.docs) == {"base", "web"}
    assert change.summary == (
        "revoked base@1.0.0+1: CVE",
        "revoked web@2.0.0+1 (built from a revoked image)",
        "warning: web@edge now points to revoked 2.0.0+1; roll it back: bake rollback web edge",
    )
    alone = deploy.plan_revoke(snap(base, web), "base@1.0.0+1", "CVE", at=at(3), cascade_children=False)
    assert set(alone.docs) == {"base"}
    with pytest.raises(BakeError, match="revoke needs a version"):
        deploy.plan_revoke(snap(web), "web@stable", "x", at=at(3))


# --------------------------------------------------------------------------- lock file


def test_pin_adds_and_replaces(web: ImageDoc) -> None:
    s = snap(web)
    lock = deploy.pin(LockFile(), deploy.resolve(s, "web@stable", "docker"), URL, T0)
    lock = deploy.pin(lock, deploy.resolve(s, "web@1.3.0", "qemu"), URL, T0)
    lock = deploy.pin(lock, deploy.resolve(s, "web@1.4.0", "docker"), URL, at(5))
    assert [(p.target, p.spec, p.version, p.pinned_at) for p in lock.pins] == [
        ("docker", "web@1.4.0", "1.4.0+2", "2024-05-01T12:05:00Z"),
        ("qemu", "web@1.3.0", "1.3.0+1", "2024-05-01T12:00:00Z"),
    ]
    found = lock.find("web", "docker")
    assert found is not None and found.digest == d("c")


def _pinned(web: ImageDoc, spec: str, target: str = "docker") -> LockFile:
    return deploy.pin(LockFile(), deploy.resolve(snap(web), spec, target), URL, T0)


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.severity) for f in findings]


def test_check_lock_clean(web: ImageDoc) -> None:
    assert deploy.check_lock(_pinned(web, "web@stable"), snap(web)) == []


def test_check_lock_revoked_pin(web: ImageDoc) -> None:
    lock = _pinned(web, "web@1.4.0+1")
    later = model.revoke(web, "1.4.0+1", "CVE-9", at=at(9))
    findings = deploy.check_lock(lock, snap(later))
    assert kinds(findings) == [("revoked", "error"), ("unresolvable", "warning")]
    assert findings[0].message == ("web@1.4.0+1 (docker) was revoked at 2024-05-01T12:09:00Z: CVE-9")


def test_check_lock_outdated_channel_and_build(web: ImageDoc) -> None:
    lock = deploy.pin(
        _pinned(web, "web@stable"),
        deploy.resolve(snap(web), "web@1.3.0", "qemu"),
        URL,
        T0,
    )
    moved = model.promote(web, "1.4.0+2", "stable", at=at(2))
    moved = build(moved, release("web", "1.3.0", "rebuilt"))
    findings = deploy.check_lock(lock, snap(moved))
    assert kinds(findings) == [("outdated", "warning"), ("outdated", "warning")]
    assert findings[0].message == "web@stable now resolves to 1.4.0+2, pinned 1.4.0+1"
    assert findings[1].message == "web@1.3.0 now resolves to 1.3.0+2, pinned 1.3.0+1"


def test_check_lock_missing_and_other_registries(web: ImageDoc) -> None:
    lock = _pinned(web, "web@stable")
    assert kinds(deploy.check_lock(lock, snap(model.new_image_doc("api")))) == [("missing", "error")]
    other = deploy.pin(LockFile(), deploy.resolve(snap(web), "web@stable", "docker"), "dir:/x", T0)
    assert deploy.check_lock(other, snap(model.new_image_doc("api"))) == []


def test_check_lock_changed_digest(web: ImageDoc) -> None:
    lock = _pinned(web, "web@stable")
    forged = LockFile((replace(lock.pins[0], digest=d("z")),))
    assert kinds(deploy.check_lock(forged, snap(web))) == [("changed", "error")]


def test_lock_file_round_trip(tmp_path: Path, web: ImageDoc) -> None:
    path = tmp_path / deploy.LOCK_FILE
    assert deploy.read_lock(path) == LockFile()
    lock = _pinned(web, "web@stable")
    deploy.write_lock(path, lock)
    assert deploy.read_lock(path) == lock
    data = json.loads(path.read_text())
    assert data["schema"] == "bake.lock/v1"
    assert data["pins"][0]["registry"] == URL
    assert [p.name for p in tmp_path.iterdir()] == ["bake.lock"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": "bake.lock/v1",\n "pins": [}', r"bake\.lock:2:\d+: not valid JSON"),
        ('{"schema": "other"}', "schema must be"),
        ('{"schema": "bake.lock/v1", "pins": {}}', "pins must be a list"),
        ('{"schema": "bake.lock/v1", "pins": [{"name": 1}]}', r"pins\[0\]\.name must be"),
    ],
)
def test_bad_lock_files_name_the_place(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bake.lock"
    path.write_text(content)
    with pytest.raises(BakeError, match=message) as info:
        deploy.read_lock(path)
    assert info.value.exit_code == 2
