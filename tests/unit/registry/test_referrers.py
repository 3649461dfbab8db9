"""Attestations where cosign and OCI 1.1 referrers clients look: against an in-memory
registry without the referrers API (as Distribution 2.8), and one with it.
tests/integration/test_oci_registry.py does the same against a real docker-registry."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.keys import SigningKey
from bake.attest.statements import sign_statement, statement
from bake.errors import RegistryError
from bake.registry import referrers
from bake.registry.ocistore import DSSE_MEDIA_TYPE, OCI_MANIFEST, Reply
from tests.unit.registry.test_ocistore import HOST, FakeRegistry, digest_of, opened, reply

REPO = "bake/web"


@dataclass
class IndexAwareRegistry(FakeRegistry):
    """The fake, storing image indexes too, and optionally answering the referrers API."""

    referrers_api: bool = False

    def _manifest(self, method: str, repo: str, ref: str, data: bytes) -> Reply:
        if method == "PUT" and json.loads(data).get("mediaType") == referrers.OCI_INDEX:
            digest = digest_of(data)
            self.manifests[repo, digest] = data
            self.tags[repo, ref] = digest
            return reply(201, Docker_Content_Digest=digest)
        return super()._manifest(method, repo, ref, data)

    def __call__(self, request: urllib.request.Request) -> Reply:
        path = urllib.parse.urlsplit(request.full_url).path
        if "/referrers/" in path:
            self.log.append((request.get_method(), path))
            if not self.referrers_api:
                return reply(404)
            body = canonical_json({"schemaVersion": 2, "mediaType": referrers.OCI_INDEX, "manifests": []})
            return reply(200, body, Content_Type=referrers.OCI_INDEX)
        return super().__call__(request)


def _image(fake: FakeRegistry) -> str:
    """A pushed image manifest (its blobs too); its digest."""
    config, layer = b'{"config":{}}', b"layer"
    for blob in (config, layer):
        fake.blobs[REPO, digest_of(blob)] = blob
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": 13,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": 5}
            ],
        }
    )
    digest = digest_of(manifest)
    fake.manifests[REPO, digest] = manifest
    return digest


def _envelopes(digest: str, key: SigningKey) -> dict[str, bytes]:
    return {
        kind: canonical_json(sign_statement(statement([(f"{HOST}/{REPO}", digest)], ptype, {"k": kind}), key))
        for kind, ptype in (
            ("provenance", "https://slsa.dev/provenance/v1"),
            ("sbom", "https://cyclonedx.org/bom"),
        )
    }


NOW = "2024-05-01T12:00:00Z"


@pytest.mark.parametrize("api", [False, True])
def test_attach_writes_cosigns_att_and_referrers(tmp_path: Path, api: bool) -> None:
    fake = IndexAwareRegistry(referrers_api=api)
    reg = opened(fake, tmp_path)
    digest = _image(fake)
    key = SigningKey.generate()
    envelopes = _envelopes(digest, key)
    out = reg.attach_attestations(f"{HOST}/{REPO}@{digest}", envelopes, NOW)

    # cosign: sha256-<hex>.att, one DSSE layer per attestation, annotated
    att = json.loads(fake.manifests[REPO, fake.tags[REPO, referrers.cosign_tag(digest)]])
    assert out["cosign"].startswith(f"{HOST}/{REPO}:sha256-{digest[7:]}.att@sha256:")
    assert [layer["mediaType"] for layer in att["layers"]] == [DSSE_MEDIA_TYPE] * 2
    types = {layer["annotations"]["predicateType"] for layer in att["layers"]}
    assert types == {"https://slsa.dev/provenance/v1", "https://cyclonedx.org/bom"}
    for layer in att["layers"]:
        assert layer["annotations"]["dev.cosignproject.cosign/signature"] == ""
        assert fake.blobs[REPO, layer["digest"]] in envelopes.values()  # the envelopes, unchanged
    config = json.loads(fake.blobs[REPO, att["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in att["layers"]]

    # referrers: an artifact manifest each, about the image
    for kind in envelopes:
        ref_digest = out[kind].rsplit("@", 1)[1]
        doc = json.loads(fake.manifests[REPO, ref_digest])
        assert doc["artifactType"] == DSSE_MEDIA_TYPE
        assert doc["subject"]["digest"] == digest
        assert doc["subject"]["size"] == len(fake.manifests[REPO, digest])
        assert doc["annotations"]["org.opencontainers.image.created"] == NOW
    # the fallback tag only where the registry has no referrers API
    assert ((REPO, f"sha256-{digest[7:]}") in fake.tags) is not api
    if not api:
        index = json.loads(fake.manifests[REPO, fake.tags[REPO, f"sha256-{digest[7:]}"]])
        assert index["mediaType"] == referrers.OCI_INDEX
        assert {m["digest"] for m in index["manifests"]} == {out[k].rsplit("@", 1)[1] for k in envelopes}


def test_attaching_again_adds_and_never_drops(tmp_path: Path) -> None:
    fake = IndexAwareRegistry()
    reg = opened(fake, tmp_path)
    digest = _image(fake)
    first = _envelopes(digest, SigningKey.generate())
    reg.attach_attestations(f"{HOST}/{REPO}@{digest}", {"provenance": first["provenance"]}, NOW)
    reg.attach_attestations(f"{HOST}/{REPO}@{digest}", first, NOW)
    reg.attach_attestations(f"{HOST}/{REPO}@{digest}", first, NOW)  # idempotent
    att = json.loads(fake.manifests[REPO, fake.tags[REPO, referrers.cosign_tag(digest)]])
    assert len(att["layers"]) == 2
    index = json.loads(fake.manifests[REPO, fake.tags[REPO, referrers.referrers_tag(digest)]])
    assert len(index["manifests"]) == 2


def test_attach_refuses_an_image_elsewhere_or_missing(tmp_path: Path) -> None:
    fake = IndexAwareRegistry()
    reg = opened(fake, tmp_path)
    digest = _image(fake)
    envelopes = _envelopes(digest, SigningKey.generate())
    with pytest.raises(RegistryError, match="is not in"):
        reg.attach_attestations(f"other.example/{REPO}@{digest}", envelopes, NOW)
    with pytest.raises(RegistryError, match="is not in the registry"):
        reg.attach_attestations(f"{HOST}/{REPO}@{sha256_bytes(b'nothing')}", envelopes, NOW)


def test_predicate_type_of_an_envelope() -> None:
    payload = base64.b64encode(json.dumps({"predicateType": "x"}).encode()).decode()
    assert referrers.predicate_type(json.dumps({"payload": payload}).encode()) == "x"
    with pytest.raises(Exception, match="not a DSSE envelope"):
        referrers.predicate_type(b"{}")


def test_dir_registries_attach_nothing(tmp_path: Path) -> None:
    from bake.registry.dirstore import DirRegistry

    assert (
        DirRegistry.at(tmp_path).attach_attestations(f"oci-layout:oci/web@{sha256_bytes(b'x')}", {}, NOW)
        == {}
    )
