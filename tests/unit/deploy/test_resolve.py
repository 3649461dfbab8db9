"""bake.deploy.resolve: specs to verified build outputs, and their formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from bake.deploy import resolve as deploy
from bake.deploy.resolve import Resolution
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import model
from bake.registry.model import ImageDoc
from tests.unit.deploy.docs import URL, at, d, snap

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
        versions={"root": 1, "timestamp": 7, "snapshot": 7},
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


def test_format_k8s_is_a_kustomize_images_entry_by_digest(res: Resolution) -> None:
    text = deploy.format_resolution(res, "k8s")
    assert text == (
        "# web@1.4.0+1 (docker): kustomization.yaml, pinned by digest (bake resolve --format k8s)\n"
        "images:\n"
        '- name: "web"\n'
        '  newName: "r.example/web"\n'
        f'  digest: "{d("b")}"\n'
    )
    parsed = yaml.safe_load(text)
    assert parsed == {"images": [{"name": "web", "newName": "r.example/web", "digest": d("b")}]}


@pytest.mark.parametrize(
    "ref", [None, "oci-layout:oci/web@sha256:" + "a" * 64, "oci-layout:///srv/r@sha256:" + "a" * 64]
)
def test_format_k8s_needs_a_reference_a_cluster_can_pull(res: Resolution, ref: str | None) -> None:
    with pytest.raises(BakeError, match="no reference a cluster can pull") as info:
        deploy.format_resolution(dataclasses.replace(res, ref=ref), "k8s")
    assert info.value.hint is not None and "oci://" in info.value.hint


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


# --------------------------------------------------------------------------- refs to paste


def test_transport_ref_for_skopeo(res: Resolution) -> None:
    assert res.to_json()["transport_ref"] == f"docker://r.example/web@{d('b')}"
    assert res.to_json()["ref"] == f"r.example/web@{d('b')}"  # as docker, podman and k8s take it


def test_a_dir_registry_ref_becomes_oci_dir_tag(res: Resolution, tmp_path: Path) -> None:
    import dataclasses

    from bake.deploy.verified import localize

    layout = tmp_path / "oci" / "web"
    layout.mkdir(parents=True)
    digest = d("b")
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": 1,
                "annotations": {"org.opencontainers.image.ref.name": "1.4.0-abcdef012345"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    stored = dataclasses.replace(res, ref=f"oci-layout:oci/web@{digest}")
    got = localize(stored, f"dir:{tmp_path}")
    assert got.ref == f"oci:{layout}:1.4.0-abcdef012345"
    assert got.digest == digest  # in its own field
    assert got.layout_ref == f"oci-layout://{layout}@{digest}"
    assert got.to_json()["transport_ref"] == got.ref
    assert f'image_ref = "oci:{layout}:1.4.0-abcdef012345"' in deploy.format_resolution(got, "tfvars")
    # a layout whose tag no longer names the digest is refused
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
    with pytest.raises(RegistryError, match="has no tagged image"):
        localize(stored, f"dir:{tmp_path}")


def test_a_layout_ref_that_is_no_layout_is_refused(res: Resolution) -> None:
    import dataclasses

    from bake.deploy.resolve import check_values

    with pytest.raises(TrustError, match="layout_ref"):
        check_values(dataclasses.replace(res, layout_ref="oci:/srv/oci/web:1.4.0"))
