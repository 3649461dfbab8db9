"""Interop: what bake signs, read by the reference implementations.

Our DSSE envelopes must verify with securesystemslib's DEFAULT verification (keys named by
securesystemslib's own key ids, which bake uses), and its envelopes with us, or other
in-toto tooling could not check what bake signs. Our statements must parse with the
in-toto-attestation bindings, our SBOMs validate with cyclonedx-python-lib, our URIs with
rfc3986.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib import exceptions as sslib_exceptions
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from bake.attest import sbom
from bake.attest.digest import sha256_bytes
from bake.attest.dsse import PAYLOAD_TYPE, sign_envelope, verify_envelope
from bake.attest.keys import PrivateKey, SigningKey
from bake.attest.predicates import attestations
from bake.attest.statements import open_statement, sign_statement, statement
from bake.compile.template import compile_plan
from bake.errors import TrustError
from bake.infra.packer import PackerInfo
from bake.plan import plan_recipe
from bake.record import BuildRecord
from bake.targets import loop
from bake.targets.base import Artifact, ArtifactFile, Evidence
from tests.conftest import FIXTURES, RECIPES

IMAGE = sha256_bytes(b"image")
KINDS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": Ed25519PrivateKey.generate,
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
}


def pair(kind: str = "ed25519") -> tuple[PrivateKey, SigningKey, SSlibKey]:
    """A private key, bake's signing key of it, and securesystemslib's default view of its
    public half (default key id: nothing handed over from bake)."""
    private = KINDS[kind]()
    return private, SigningKey.from_crypto(private), SSlibKey.from_crypto(private.public_key())


@pytest.mark.parametrize("kind", list(KINDS))
def test_our_envelope_passes_securesystemslibs_default_verification(kind: str) -> None:
    _private, key, sslib_key = pair(kind)
    assert key.keyid == sslib_key.keyid  # the same name for the same key
    env = sign_statement(statement([("disk", IMAGE)], "t", {"a": "ü"}), key)
    # from_dict rewrites the signature dicts it is given, so hand it a copy.
    sslib_env = Envelope.from_dict(copy.deepcopy(json.loads(json.dumps(env))))
    assert sslib_env.payload_type == PAYLOAD_TYPE
    assert list(sslib_env.verify([sslib_key], 1)) == [key.keyid]


def test_securesystemslib_rejects_our_tampered_envelope() -> None:
    _private, key, sslib_key = pair()
    sslib_env = Envelope.from_dict(copy.deepcopy(sign_envelope(b"hello", key)))
    sslib_env.payload = b"HELLO"
    with pytest.raises(sslib_exceptions.VerificationError):
        sslib_env.verify([sslib_key], 1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_securesystemslib_envelope_verifies_with_us(kind: str) -> None:
    private, key, _sslib_key = pair(kind)
    payload = json.dumps(statement([("disk", IMAGE)], "t", {})).encode()
    sslib_env = Envelope(payload, PAYLOAD_TYPE, {})
    sslib_env.sign(CryptoSigner(private))
    env = json.loads(json.dumps(sslib_env.to_dict()))
    assert env["signatures"][0]["keyid"] == key.keyid
    assert verify_envelope(env, [key.public]) == payload
    assert open_statement(env, [key.public], expect_subject_digest=IMAGE)["predicateType"] == "t"


def test_a_keyid_is_only_a_hint() -> None:
    private, key, _ = pair()
    named_otherwise = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid="ci-key-1"))
    sslib_env = Envelope(b"x", PAYLOAD_TYPE, {})
    sslib_env.sign(named_otherwise)
    assert verify_envelope(sslib_env.to_dict(), [key.public]) == b"x"


def test_securesystemslib_envelope_by_stranger_is_rejected() -> None:
    stranger, _, _ = pair()
    sslib_env = Envelope(b"x", PAYLOAD_TYPE, {})
    sslib_env.sign(CryptoSigner(stranger))
    with pytest.raises(TrustError, match="no valid signature"):
        verify_envelope(sslib_env.to_dict(), [SigningKey.generate().public])


# --- what bake attests, read by tools this project did not write ---------------------------
#
# Every statement bake signs (provenance, test-result, SBOM, file manifest; a container and
# a VM image, each with a parent) goes through in-toto-attestation's protobuf bindings; every
# SBOM through cyclonedx-python-lib's strict JSON-schema validation and a check of the NTIA
# minimum elements; every resolvedDependencies URI through rfc3986.

NOW = "2024-05-01T12:00:00Z"
PARENT = sha256_bytes(b"parent manifest")
STATUS_FULL = FIXTURES / "dpkg" / "status-full"


def _record(target: str) -> tuple[BuildRecord, tuple[tuple[str, str], ...], Evidence]:
    """A good record of recipes/web.yaml as the bake loop writes it (inputs, sources and
    byproducts from the real planner and compiler), its subjects and evidence."""
    (plan,) = plan_recipe(RECIPES / "web.yaml", PackerInfo((1, 6, 6)), targets=[target])
    assert plan.parent is not None
    files: dict[str, ArtifactFile] = {}
    if target == "qemu":
        files = {
            r: ArtifactFile(Path(f"/x/{r}"), sha256_bytes(r.encode()), 1)
            for r in ("disk", "kernel", "initrd")
        }
    artifact = Artifact("qcow2" if files else "docker-image", id="x", digest=IMAGE, files=files)
    record = BuildRecord(
        status="good",
        name=plan.name,
        version=plan.version,
        target=target,
        bake_key=plan.key,
        recipe_path=str(plan.resolved.path),
        packer_version=plan.packer.text,
        created="2024-05-01T12:00:56Z",
        started="2024-05-01T12:00:00Z",
        invocation_id="6c0d4f9e-8a55-4b0e-9d7e-0d1c3b1e2a77",
        artifact=artifact,
        inputs=dict(plan.inputs),
        parent={"name": plan.parent.name, "version": plan.parent.version, "bake_key": plan.parent.key},
        sources=loop.sources(plan),
        byproducts=loop.byproducts(plan, compile_plan(plan)),
        verify={
            "ok": True,
            "results": [{"title": "nginx-light installed", "outcome": "passed"}],
            "checks": [{"package": {"name": "nginx-light"}}],
        },
    )
    subjects = artifact.subjects("web") if files else (("127.0.0.1:5000/bake/web", IMAGE),)
    copyrights = {
        p.name.split(".")[0]: p.read_text(encoding="utf-8") for p in (FIXTURES / "dpkg" / "doc").iterdir()
    }
    evidence = Evidence(
        packages=STATUS_FULL.read_text(encoding="utf-8"),
        files={"entries": []},
        copyrights=copyrights,
        os_release=(FIXTURES / "dpkg" / "os-release").read_text(encoding="utf-8"),
    )
    return record, subjects, evidence


def _statements(target: str) -> dict[str, dict[str, object]]:
    record, subjects, evidence = _record(target)
    key = SigningKey.generate()
    parent_ref = f"127.0.0.1:5000/bake/debian-base@{PARENT}" if target == "docker" else None
    envelopes = attestations(
        record,
        subjects,
        key,
        evidence=evidence,
        parent_digest=PARENT,
        now=NOW,
        parent_ref=parent_ref,
        tag="1.4.0-abc",
    )
    assert set(envelopes) == {"provenance", "test-result", "sbom", "files"}
    out = {}
    for kind, data in envelopes.items():
        # and securesystemslib verifies each envelope
        sslib_env = Envelope.from_dict(json.loads(data))
        assert list(sslib_env.verify([key.signer.public_key], 1)) == [key.keyid]
        out[kind] = open_statement(json.loads(data), [key.public], expect_subject_digest=subjects[0][1])
    return out


TARGETS = ("docker", "qemu")


@pytest.mark.parametrize("target", TARGETS)
def test_every_statement_parses_with_in_toto_attestation(target: str) -> None:
    json_format = pytest.importorskip("google.protobuf.json_format")
    ita_statement = pytest.importorskip("in_toto_attestation.v1.statement")
    ita_rd = pytest.importorskip("in_toto_attestation.v1.resource_descriptor")
    provenance_pb2 = pytest.importorskip("in_toto_attestation.predicates.provenance.v1.provenance_pb2")
    test_result_pb2 = pytest.importorskip("in_toto_attestation.predicates.test_result.v0.test_result_pb2")
    for kind, stmt in _statements(target).items():
        pb = json_format.ParseDict(stmt, ita_statement.spb.Statement())  # strict: no unknown fields
        ita_statement.Statement.copy_from_pb(pb).validate()
        predicate = stmt["predicate"]
        assert isinstance(predicate, dict)
        if kind == "provenance":
            prov = json_format.ParseDict(predicate, provenance_pb2.Provenance())
            descriptors = [*prov.build_definition.resolved_dependencies, *prov.run_details.byproducts]
            for rd in descriptors:
                ita_rd.ResourceDescriptor.copy_from_pb(rd).validate()
            assert prov.run_details.metadata.started_on.ToJsonString() == "2024-05-01T12:00:00Z"
            assert prov.run_details.metadata.finished_on.ToJsonString() == "2024-05-01T12:00:56Z"
        elif kind == "test-result":
            result = json_format.ParseDict(predicate, test_result_pb2.TestResult())
            for rd in result.configuration:
                ita_rd.ResourceDescriptor.copy_from_pb(rd).validate()
            assert result.result == "PASSED"


@pytest.mark.parametrize("target", TARGETS)
def test_every_resolved_dependency_uri_has_a_scheme(target: str) -> None:
    rfc3986 = pytest.importorskip("rfc3986")
    validators = pytest.importorskip("rfc3986.validators")
    predicate = _statements(target)["provenance"]["predicate"]
    assert isinstance(predicate, dict)
    deps = predicate["buildDefinition"]["resolvedDependencies"]
    assert deps
    for dep in deps:
        uri = rfc3986.uri_reference(dep["uri"])
        validators.Validator().require_presence_of("scheme").check_validity_of(
            "scheme", "path", "query", "fragment"
        ).validate(uri)
        assert uri.scheme, dep["uri"]
    uris = {d["name"]: d["uri"] for d in deps}
    # the template's digest is that of the file as read; its rendered output is a byproduct
    template_src = next(n for n in uris if n.startswith("file:") and n.endswith(".j2"))
    assert uris[template_src] == "file:" + template_src.removeprefix("file:")
    record, _, _ = _record(target)
    by_name = {d["name"]: d["digest"]["sha256"] for d in deps}
    assert "sha256:" + by_name[template_src] == record.sources[template_src]
    assert "sha256:" + by_name[template_src] != record.inputs[template_src]
    byproducts = {b["name"] for b in predicate["runDetails"]["byproducts"]}
    assert "rendered:" + template_src.removeprefix("file:") in byproducts
    assert any(b.startswith("packer:") and b.endswith(".pkr.hcl") for b in byproducts)
    # the parent, once, by its published digest
    parents = [d for d in deps if d["name"].startswith("parent:")]
    assert [p["digest"]["sha256"] for p in parents] == [PARENT.removeprefix("sha256:")]


def _ntia_gaps(bom: dict[str, Any]) -> list[str]:
    """What the NTIA minimum elements ask of an SBOM and this one lacks: supplier, name,
    version, a unique identifier, dependency relationships of every component; the author
    of the SBOM data and a timestamp."""
    gaps = []
    meta = bom.get("metadata") or {}
    if not meta.get("timestamp"):
        gaps.append("metadata.timestamp")
    if not (meta.get("authors") or meta.get("manufacture") or meta.get("supplier")):
        gaps.append("metadata.authors")
    top = meta.get("component") or {}
    for field in ("name", "version", "purl"):
        if not top.get(field):
            gaps.append(f"metadata.component.{field}")
    related = {d.get("ref") for d in bom.get("dependencies") or []}
    for c in bom.get("components") or []:
        where = f"components[{c.get('name')}]"
        if not (c.get("supplier") or {}).get("name"):
            gaps.append(f"{where}.supplier")
        gaps += [f"{where}.{f}" for f in ("name", "version", "purl") if not c.get(f)]
        if c.get("bom-ref") not in related:
            gaps.append(f"{where}: no dependencies entry")
    if top.get("bom-ref") not in related:
        gaps.append("metadata.component: no dependencies entry")
    return gaps


def _sboms() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for target in TARGETS:
        predicate = _statements(target)["sbom"]["predicate"]
        assert isinstance(predicate, dict)
        out.append((f"attested {target}", predicate))
    host = Path("/var/lib/dpkg/status")
    if host.is_file():  # this very machine: hundreds of real packages and copyright files
        docs = Path("/usr/share/doc")
        copyrights = {
            d.name: (d / "copyright").read_text(encoding="utf-8", errors="replace")
            for d in (docs.iterdir() if docs.is_dir() else [])
            if (d / "copyright").is_file()
        }
        os_release = Path("/etc/os-release")
        bom = sbom.cyclonedx(
            sbom.parse_dpkg_status(host.read_text(encoding="utf-8", errors="replace")),
            image_name="host",
            image_digest=IMAGE,
            timestamp=NOW,
            image=sbom.Image("host", "1.0.0", IMAGE, sbom.oci_purl("host", IMAGE)),
            copyrights=copyrights,
            distro=sbom.os_release_distro(os_release.read_text() if os_release.is_file() else None),
        )
        out.append(("this host", bom))
    return out


def test_every_sbom_validates_strictly_with_cyclonedx_and_has_the_ntia_elements() -> None:
    cdx_json = pytest.importorskip("cyclonedx.validation.json")
    cdx_schema = pytest.importorskip("cyclonedx.schema")
    packageurl = pytest.importorskip("packageurl")
    validator = cdx_json.JsonStrictValidator(cdx_schema.SchemaVersion.V1_5)
    for what, bom in _sboms():
        error = validator.validate_str(json.dumps(bom))
        assert error is None, f"{what}: {error}"
        assert _ntia_gaps(bom) == [], what
        for c in [bom["metadata"]["component"], *bom["components"]]:
            purl = packageurl.PackageURL.from_string(c["purl"])
            assert purl.to_string() == c["purl"], what  # canonical form
            if purl.type == "deb":
                assert set(purl.qualifiers) >= {"arch", "distro"}, c["purl"]


def test_sbom_names_the_image_by_an_oci_purl_and_its_version() -> None:
    packageurl = pytest.importorskip("packageurl")
    top = _statements("docker")["sbom"]["predicate"]["metadata"]["component"]  # type: ignore[index]
    purl = packageurl.PackageURL.from_string(top["purl"])
    assert (purl.type, purl.name, purl.version) == ("oci", "web", IMAGE)
    assert purl.qualifiers == {"repository_url": "127.0.0.1:5000/bake/web", "tag": "1.4.0-abc"}
    record, _, _ = _record("docker")
    assert (top["name"], top["version"], top["type"]) == ("web", record.version, "container")
