from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bake.attest.digest import sha256_bytes
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import model
from bake.registry.model import ImageDoc, Release, TargetOutput

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def digest(text: str) -> str:
    return sha256_bytes(text.encode())


def release(
    version: str = "1.4.0",
    *,
    name: str = "web",
    key: str = "key-a",
    out: str = "out-a",
    parent: str | None = None,
) -> Release:
    return Release(
        name=name,
        version=version,
        bake_key=key,
        created=T0,
        targets={"docker": TargetOutput(digest(out), ref=f"r.example/{name}@{digest(out)}")},
        attestations={"provenance": digest(f"prov-{out}")},
        parent=parent,
    )


def publish(doc: ImageDoc, *releases: Release) -> tuple[ImageDoc, list[str]]:
    versions = []
    for r in releases:
        doc, v = model.add_build(doc, r)
        versions.append(v)
    return doc, versions


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --------------------------------------------------------------------------- builds


def test_first_build_is_number_one_and_the_old_document_is_untouched() -> None:
    empty = model.new_image_doc("web")
    doc, version = model.add_build(empty, release())
    assert version == "1.4.0+1"
    assert empty.versions == {}
    build = doc.versions["1.4.0+1"]
    assert (build.version, build.build, build.bake_key) == ("1.4.0", 1, "key-a")
    assert build.created == "2024-05-01T12:00:00Z"
    assert build.full_version == "1.4.0+1"


def test_documents_are_immutable() -> None:
    doc, _ = publish(model.new_image_doc("web"), release())
    with pytest.raises(TypeError):
        doc.versions["9.9.9+1"] = doc.versions["1.4.0+1"]  # type: ignore[index]
    with pytest.raises(TypeError):
        doc.versions["1.4.0+1"].targets["qemu"] = TargetOutput(digest("x"))  # type: ignore[index]
    with pytest.raises(AttributeError):
        doc.name = "other"  # type: ignore[misc]


def test_republishing_the_same_release_is_idempotent() -> None:
    doc, _ = publish(model.new_image_doc("web"), release())
    again, version = model.add_build(doc, release())
    assert again is doc
    assert version == "1.4.0+1"


def test_a_different_bake_key_or_output_becomes_a_new_build() -> None:
    doc, versions = publish(
        model.new_image_doc("web"),
        release(),
        release(key="key-b"),  # inputs changed
        release(out="out-b"),  # same inputs, other bytes: a non-reproducible build
        release(key="key-b"),  # identical to +2: idempotent
        release("1.5.0"),
    )
    assert versions == ["1.4.0+1", "1.4.0+2", "1.4.0+3", "1.4.0+2", "1.5.0+1"]
    assert sorted(doc.versions) == ["1.4.0+1", "1.4.0+2", "1.4.0+3", "1.5.0+1"]


def test_republishing_a_revoked_build_does_not_bring_it_back() -> None:
    doc, _ = publish(model.new_image_doc("web"), release())
    doc = model.revoke(doc, "1.4.0+1", "CVE-1", at=T0)
    again, version = model.add_build(doc, release())
    assert (again, version) == (doc, "1.4.0+1")
    assert model.is_revoked(again, version)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "1.4.0+3"}, "carries build metadata"),
        ({"version": "1.4"}, "not a semantic version"),
        ({"name": "Web"}, "image name 'Web' is invalid"),
        ({"bake_key": ""}, "empty bake key"),
        ({"targets": {}}, "no targets"),
        ({"targets": {"docker": TargetOutput("sha256:abc")}}, "targets.docker.digest"),
        ({"attestations": {"provenance": "md5:x"}}, "attestations.provenance"),
        ({"parent": "base@1.0.0"}, "not NAME@VERSION\\+BUILD"),
    ],
)
def test_invalid_releases_are_refused(change: dict[str, object], message: str) -> None:
    bad = replace(release(), **change)  # type: ignore[arg-type]
    doc = model.new_image_doc("web")
    with pytest.raises(BakeError, match=message):
        model.add_build(doc, bad)


def test_unknown_attestation_kind_suggests_the_near_miss() -> None:
    bad = replace(release(), attestations={"provenace": digest("p")})
    with pytest.raises(BakeError, match="unknown") as info:
        model.add_build(model.new_image_doc("web"), bad)
    assert info.value.hint == "did you mean 'provenance'?"


def test_release_of_another_image_is_refused() -> None:
    with pytest.raises(BakeError, match="cannot go into the document of 'api'"):
        model.add_build(model.new_image_doc("api"), release())


# --------------------------------------------------------------------------- selection


@pytest.fixture
def web() -> ImageDoc:
    doc, _ = publish(
        model.new_image_doc("web"),
        release("1.3.0"),
        release("1.4.0"),
        release("1.4.0", key="key-b"),
        release("1.5.0-rc.1"),
    )
    return model.promote(doc, "1.3.0", "stable", at=at(1))


def test_a_version_selects_its_latest_live_build(web: ImageDoc) -> None:
    assert model.select(web, "1.4.0").version == "1.4.0+2"
    revoked = model.revoke(web, "1.4.0+2", "broken", at=at(2))
    assert model.select(revoked, "1.4.0").version == "1.4.0+1"


def test_an_exact_build_selects_that_build(web: ImageDoc) -> None:
    picked = model.select(web, "1.4.0+1")
    assert (picked.version, picked.channel, picked.build.bake_key) == ("1.4.0+1", None, "key-a")


def test_latest_is_the_highest_live_release(web: ImageDoc) -> None:
    assert model.select(web, "latest").version == "1.4.0+2"  # the rc is left out
    web = model.revoke(web, "1.4.0", "broken", at=at(2))
    assert model.select(web, "latest").version == "1.3.0+1"
    web = model.revoke(web, "1.3.0+1", "broken too", at=at(3))
    with pytest.raises(RegistryError, match="no release that is not revoked"):
        model.select(web, "latest")


def test_a_channel_selects_its_head(web: ImageDoc) -> None:
    picked = model.select(web, "stable")
    assert (picked.version, picked.channel) == ("1.3.0+1", "stable")


def test_unknown_channel_and_version_suggest_near_misses(web: ImageDoc) -> None:
    with pytest.raises(RegistryError, match="no channel 'stabel'") as info:
        model.select(web, "stabel")
    assert info.value.hint == "did you mean 'stable'?"
    with pytest.raises(RegistryError, match=r"web@1\.4\.1 is not in the registry") as info:
        model.select(web, "1.4.1")
    assert info.value.hint is not None and "1.4.0" in info.value.hint
    with pytest.raises(RegistryError, match=r"web@1\.4\.0\+7 is not in the registry"):
        model.select(web, "1.4.0+7")


def test_a_selector_that_is_neither_version_nor_channel_is_a_usage_error(web: ImageDoc) -> None:
    with pytest.raises(BakeError, match="neither a version nor a channel") as info:
        model.select(web, "1.4")
    assert info.value.exit_code == 2


def test_revoked_selections_say_why_and_when(web: ImageDoc) -> None:
    web = model.revoke(web, "1.3.0+1", "CVE-2024-1", at=at(5))
    with pytest.raises(TrustError, match=r"web@1\.3\.0\+1 was revoked at 2024-05-01T12:05:00Z"):
        model.select(web, "1.3.0+1")
    with pytest.raises(TrustError, match=r"web@stable points to web@1\.3\.0\+1.*CVE-2024-1") as e:
        model.select(web, "stable")
    assert e.value.hint is not None and "bake rollback web stable" in e.value.hint


def test_split_spec() -> None:
    assert model.split_spec("team/web@stable") == ("team/web", "stable")
    for bad in ("web", "web@", "@stable"):
        with pytest.raises(BakeError, match="not an image spec"):
            model.split_spec(bad)


# --------------------------------------------------------------------------- channels


def test_promote_records_history_and_is_idempotent(web: ImageDoc) -> None:
    promoted = model.promote(web, "1.4.0", "stable", at=at(2))
    channel = promoted.channels["stable"]
    assert channel.current == "1.4.0+2"
    assert [(e.version, e.action) for e in channel.history] == [
        ("1.3.0+1", "promote"),
        ("1.4.0+2", "promote"),
    ]
    assert channel.history[-1].at == "2024-05-01T12:02:00Z"
    assert model.promote(promoted, "1.4.0+2", "stable", at=at(3)) is promoted
    assert web.channels["stable"].current == "1.3.0+1"  # the input is untouched


def test_promote_from_another_channel(web: ImageDoc) -> None:
    doc = model.promote(web, "stable", "prod", at=at(2))
    assert doc.channels["prod"].current == "1.3.0+1"


def test_promote_refuses_revoked_unknown_and_reserved(web: ImageDoc) -> None:
    revoked = model.revoke(web, "1.4.0+1", "broken", at=at(2))
    with pytest.raises(TrustError, match="revoked"):
        model.promote(revoked, "1.4.0+1", "stable", at=at(3))
    with pytest.raises(RegistryError, match="not in the registry"):
        model.promote(web, "2.0.0", "stable", at=at(3))
    for bad in ("latest", "1stable", "Stable"):
        with pytest.raises(BakeError, match="channel name"):
            model.promote(web, "1.4.0", bad, at=at(3))


def test_rollback_goes_back_step_by_step(web: ImageDoc) -> None:
    doc = model.promote(web, "1.4.0+1", "stable", at=at(2))
    doc = model.promote(doc, "1.4.0+2", "stable", at=at(3))
    doc = model.rollback(doc, "stable", at=at(4))
    assert doc.channels["stable"].current == "1.4.0+1"
    assert doc.channels["stable"].history[-1].action == "rollback"
    # A second rollback goes further back, not forth to what the first one left.
    doc = model.rollback(doc, "stable", at=at(5))
    assert doc.channels["stable"].current == "1.3.0+1"
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        model.rollback(doc, "stable", at=at(6))


def test_rollback_skips_revoked_versions(web: ImageDoc) -> None:
    doc = model.promote(web, "1.4.0+1", "stable", at=at(2))
    doc = model.promote(doc, "1.4.0+2", "stable", at=at(3))
    doc = model.revoke(doc, "1.4.0+1", "broken", at=at(4))
    doc = model.rollback(doc, "stable", at=at(5))
    assert doc.channels["stable"].current == "1.3.0+1"


def test_rollback_after_repromoting_the_same_version(web: ImageDoc) -> None:
    doc = model.promote(web, "1.4.0+1", "stable", at=at(2))
    doc = model.promote(doc, "1.3.0+1", "stable", at=at(3))
    doc = model.rollback(doc, "stable", at=at(4))
    assert doc.channels["stable"].current == "1.4.0+1"


def test_rollback_of_an_unknown_channel(web: ImageDoc) -> None:
    with pytest.raises(RegistryError, match="no channel 'stabel'") as info:
        model.rollback(web, "stabel", at=at(2))
    assert info.value.hint == "did you mean 'stable'?"


# --------------------------------------------------------------------------- revocation


def test_revoke_one_build_or_all_builds_of_a_version(web: ImageDoc) -> None:
    one = model.revoke(web, "1.4.0+1", " broken ", at=at(2))
    assert set(one.revocations) == {"1.4.0+1"}
    assert one.revocations["1.4.0+1"] == model.Revocation("broken", "2024-05-01T12:02:00Z")
    both = model.revoke(one, "1.4.0", "all broken", at=at(3))
    assert set(both.revocations) == {"1.4.0+1", "1.4.0+2"}
    assert both.revocations["1.4.0+1"].reason == "broken"  # the first record is kept
    assert model.revoke(both, "1.4.0", "again", at=at(4)) is both


def test_revoke_refuses_unknown_versions_and_empty_reasons(web: ImageDoc) -> None:
    with pytest.raises(RegistryError, match="not in the registry"):
        model.revoke(web, "9.0.0", "x", at=T0)
    with pytest.raises(RegistryError, match="not in the registry"):
        model.revoke(web, "1.4.0+9", "x", at=T0)
    with pytest.raises(BakeError, match="needs a reason"):
        model.revoke(web, "1.4.0+1", "  ", at=T0)


def test_cascade_revokes_descendants_transitively() -> None:
    base, _ = publish(
        model.new_image_doc("base"), release("1.0.0", name="base"), release("1.1.0", name="base")
    )
    web, _ = publish(
        model.new_image_doc("web"),
        release("2.0.0", name="web", parent="base@1.0.0+1"),
        release("2.1.0", name="web", parent="base@1.1.0+1"),
    )
    api, _ = publish(
        model.new_image_doc("api"),
        release("3.0.0", name="api", parent="web@2.0.0+1"),
    )
    other, _ = publish(model.new_image_doc("other"), release("1.0.0", name="other"))
    base = model.revoke(base, "1.0.0+1", "CVE", at=at(1))
    docs = {"base": base, "web": web, "api": api, "other": other}

    changed, affected = model.cascade(docs, ["base@1.0.0+1"], at=at(2))

    assert affected == ["api@3.0.0+1", "web@2.0.0+1"]
    assert set(changed) == {"web", "api"}
    assert changed["web"].revocations["2.0.0+1"].reason == "parent base@1.0.0+1 was revoked"
    assert changed["api"].revocations["3.0.0+1"].reason == "parent web@2.0.0+1 was revoked"
    assert not model.is_revoked(changed["web"], "2.1.0+1")
    assert model.cascade(docs, ["other@1.0.0+1"], at=at(2)) == ({}, [])


# --------------------------------------------------------------------------- JSON


def test_image_document_round_trips_through_canonical_json(web: ImageDoc) -> None:
    doc = model.revoke(model.promote(web, "1.4.0", "stable", at=at(2)), "1.3.0+1", "x", at=at(3))
    data = model.encode_image_doc(doc)
    assert data == model.encode_image_doc(model.decode_image_doc(data, name="web"))
    assert model.decode_image_doc(data, name="web") == doc
    assert json.loads(data)["schema"] == model.IMAGE_SCHEMA


def test_names_and_protected_channels_round_trip(web: ImageDoc) -> None:
    assert model.decode_names(model.encode_names(["web", "api", "web"])) == ["api", "web"]
    doc = model.promote(web, "1.4.0", "prod", at=at(2))
    data = model.encode_channel_doc("web", "prod", doc.channels["prod"])
    assert model.decode_channel_doc(data, name="web", channel="prod") == doc.channels["prod"]
    with pytest.raises(TrustError, match="binds channel 'stable' of 'web' to the document of 'prod'"):
        model.decode_channel_doc(data, name="web", channel="stable")


def _doc_json(web: ImageDoc) -> dict[str, object]:
    return model.image_doc_to_json(web)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema",), "bake.image/v9", "schema 'bake.image/v9'"),
        (("versions", "1.3.0+1", "build"), "1", r"versions\.1\.3\.0\+1\.build must be"),
        (("versions", "1.3.0+1", "build"), 2, r"versions\.1\.3\.0\+1 must be the build"),
        (("versions", "1.3.0+1", "targets", "docker"), [], r"targets\.docker must be an object"),
        (("channels", "stable", "current"), "9.9.9+1", "current must be a known version"),
        (("channels", "stable", "history"), {}, "history must be a list"),
        (("revocations",), [], "revocations must be an object"),
    ],
)
def test_malformed_image_documents_name_the_field(
    web: ImageDoc, path: tuple[str, ...], value: object, message: str
) -> None:
    data = _doc_json(web)
    node: dict[str, object] = data
    for key in path[:-1]:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    node[path[-1]] = value
    with pytest.raises(RegistryError, match=message):
        model.decode_image_doc(json.dumps(data).encode(), name="web")


def test_a_document_of_another_name_is_a_trust_error(web: ImageDoc) -> None:
    with pytest.raises(TrustError, match="binds 'api' to the image document of 'web'"):
        model.decode_image_doc(model.encode_image_doc(web), name="api")


def test_not_json_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="not valid JSON"):
        model.decode_names(b"\xff{")


def test_times_are_rfc3339_utc() -> None:
    tz = datetime(2024, 5, 1, 14, 0, 30, 999, tzinfo=UTC).astimezone()
    assert model.format_time(tz) == "2024-05-01T14:00:30Z"
    assert model.parse_time("2024-05-01T14:00:30Z") == datetime(2024, 5, 1, 14, 0, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        model.format_time(datetime(2024, 5, 1))  # naive on purpose
    with pytest.raises(RegistryError, match="not RFC 3339"):
        model.parse_time("2024-05-01 14:00")


D64 = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        (f"127.0.0.1:5000/team/web@{D64}", True),
        (f"oci-layout:oci/web@{D64}", True),
        (f"oci-layout:///srv/registry/oci/web@{D64}", True),
        ("oci:/srv/registry/oci/web:1.4.0-abcdef012345", True),  # skopeo's transport, as localized
        ("oci:/srv/registry/../../etc:1.4.0", False),  # no dot segment in a layout path
        ("oci:/srv/registry/oci/web:1.4.0\nLD_PRELOAD=x", False),  # one line, nothing appended
        ("oci:relative/web:1.4.0", False),  # localized refs are absolute
        (f"oci-layout:oci/../web@{D64}", False),
    ],
)
def test_references_are_checked_against_their_grammar(ref: str, ok: bool) -> None:
    assert model.reference_ok(ref) is ok
