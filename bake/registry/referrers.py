"""Attestations where standard supply-chain tools look for them in an OCI registry.

bake's own index binds every attestation by digest (:mod:`bake.registry.client`); this
module puts the same signed DSSE envelopes, unchanged, where cosign, Kyverno, Tekton
Chains and ORAS find them, in the image's own repository:

- **cosign's tag scheme**: the tag ``sha256-<hex>.att`` of the image digest holds an OCI
  image manifest with one layer per attestation, each a DSSE envelope
  (``application/vnd.dsse.envelope.v1+json``) annotated with its ``predicateType`` and
  the empty ``dev.cosignproject.cosign/signature`` cosign writes for DSSE layers; the
  config is the minimal image config cosign writes (the layers as diff IDs). Layers a
  manifest already holds are kept: attaching again adds, never drops.
- **OCI 1.1 referrers**: per attestation an artifact manifest (``artifactType`` the DSSE
  media type, the empty config, the envelope as its layer) whose ``subject`` is the image
  manifest. A registry with the referrers API (``GET /v2/REPO/referrers/DIGEST``) lists
  them by itself; for one without it (a 404 there, as Distribution 2.8's
  docker-registry), the fallback tag scheme of the distribution spec: the tag
  ``sha256-<hex>`` holds an image index of the referrers, updated read-modify-write.

Every manifest written carries ``org.opencontainers.image.created`` (the publish time).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bake.attest.digest import canonical_json, is_digest, sha256_bytes
from bake.errors import RegistryError, TrustError
from bake.registry.ocistore import (
    DSSE_MEDIA_TYPE,
    EMPTY_CONFIG,
    EMPTY_JSON,
    MAX_MANIFEST,
    OCI_MANIFEST,
    Descriptor,
    Distribution,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
PREDICATE_TYPE = "predicateType"  # cosign's layer annotation
INTOTO_PREDICATE_TYPE = "in-toto.io/predicate-type"  # on referrer manifests
CREATED = "org.opencontainers.image.created"
ATTESTATION_ARTIFACT_TYPE = DSSE_MEDIA_TYPE
_COSIGN_TIME = "0001-01-01T00:00:00Z"  # what cosign writes in its configs


def cosign_tag(digest: str) -> str:
    """``sha256-<hex>.att``: where cosign looks for an image's attestations."""
    return f"{_digest_tag(digest)}.att"


def referrers_tag(digest: str) -> str:
    """``sha256-<hex>``: the referrers fallback tag of the distribution spec."""
    return _digest_tag(digest)


def _digest_tag(digest: str) -> str:
    if not is_digest(digest):
        raise RegistryError(f"{digest!r} is not a manifest digest")
    return digest.replace(":", "-")


def predicate_type(envelope: bytes) -> str:
    """The predicateType of the in-toto statement a DSSE envelope carries."""
    try:
        doc = json.loads(envelope)
        stmt = json.loads(base64.b64decode(doc["payload"], validate=True))
        value = stmt["predicateType"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TrustError("an attestation to attach is not a DSSE envelope of an in-toto statement") from None
    if not isinstance(value, str):
        raise TrustError("an attestation to attach has no predicateType")
    return value


# --------------------------------------------------------------------------- documents (pure)


def cosign_layer(envelope: Descriptor, ptype: str) -> dict[str, Any]:
    return {
        "mediaType": DSSE_MEDIA_TYPE,
        "digest": envelope.digest,
        "size": envelope.size,
        "annotations": {COSIGN_SIGNATURE: "", PREDICATE_TYPE: ptype},
    }


def cosign_config(layers: Sequence[Mapping[str, Any]]) -> bytes:
    """The minimal image config cosign writes: its layers as diff IDs, zero times."""
    return canonical_json(
        {
            "architecture": "",
            "config": {},
            "created": _COSIGN_TIME,
            "history": [{"created": _COSIGN_TIME}],
            "os": "",
            "rootfs": {"diff_ids": [layer["digest"] for layer in layers], "type": "layers"},
        }
    )


def cosign_manifest(layers: Sequence[Mapping[str, Any]], created: str) -> tuple[bytes, bytes]:
    """(config, manifest) of cosign's ``.att`` image: one DSSE layer per attestation."""
    config = cosign_config(layers)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_bytes(config), "size": len(config)},
            "layers": list(layers),
            "annotations": {CREATED: created},
        }
    )
    return config, manifest


def referrer_manifest(envelope: Descriptor, ptype: str, subject: Mapping[str, Any], created: str) -> bytes:
    """An OCI 1.1 artifact manifest of one attestation, about *subject*."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ATTESTATION_ARTIFACT_TYPE,
            "config": EMPTY_CONFIG.to_json(),
            "layers": [{"mediaType": DSSE_MEDIA_TYPE, "digest": envelope.digest, "size": envelope.size}],
            "subject": dict(subject),
            "annotations": {CREATED: created, INTOTO_PREDICATE_TYPE: ptype},
        }
    )


def referrers_index(existing: bytes | None, added: Sequence[Mapping[str, Any]]) -> bytes:
    """The fallback tag's image index: what it listed, plus *added* (by digest, once)."""
    manifests: list[dict[str, Any]] = []
    if existing is not None:
        try:
            doc = json.loads(existing)
        except (ValueError, UnicodeDecodeError):
            doc = None
        listed = doc.get("manifests") if isinstance(doc, dict) and doc.get("mediaType") == OCI_INDEX else None
        manifests = [m for m in listed or [] if isinstance(m, dict) and is_digest(m.get("digest"))]
    seen = {m["digest"] for m in manifests}
    manifests += [dict(m) for m in added if m["digest"] not in seen]
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def _layers_of(manifest: bytes | None) -> list[dict[str, Any]]:
    """The DSSE layers of an existing ``.att`` manifest (others are not ours to keep)."""
    if manifest is None:
        return []
    try:
        doc = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        return []
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return [
        layer
        for layer in layers or []
        if isinstance(layer, dict)
        and layer.get("mediaType") == DSSE_MEDIA_TYPE
        and is_digest(layer.get("digest"))
        and isinstance(layer.get("size"), int)
    ]


# --------------------------------------------------------------------------- the registry


def supports_referrers(client: Distribution, repository: str, digest: str) -> bool:
    """Whether the registry answers the OCI 1.1 referrers API (else: the fallback tag)."""
    url = client.url(repository, f"referrers/{digest}")
    with client.request("GET", repository, url, headers={"Accept": OCI_INDEX}) as reply:
        if reply.status == 200:
            content_type = reply.headers.get("Content-Type", "")
            return content_type.split(";")[0].strip() == OCI_INDEX
        if reply.status in (404, 405, 400):
            return False
        raise client.fail(reply, f"cannot ask {client.location.host}/{repository} for referrers")


def subject_of(client: Distribution, repository: str, digest: str) -> dict[str, Any]:
    """The descriptor of the image manifest the attestations are about."""
    got = client.get_manifest(repository, digest)
    if got is None:
        raise RegistryError(f"{client.location.host}/{repository}@{digest} is not in the registry")
    data, _ = got
    try:
        media_type = json.loads(data).get("mediaType")
    except (ValueError, UnicodeDecodeError, AttributeError):
        media_type = None
    if not isinstance(media_type, str):
        raise TrustError(f"{client.location.host}/{repository}@{digest} is no image manifest")
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def attach(
    client: Distribution, repository: str, digest: str, envelopes: Mapping[str, bytes], created: str
) -> dict[str, str]:
    """Attach *envelopes* (by kind) to the image ``repository@digest``: cosign's ``.att``
    manifest and one referrer each. Returns the references written, by kind
    (``cosign``: the ``.att`` tag; each attestation kind: its referrer manifest)."""
    host = client.location.host
    subject = subject_of(client, repository, digest)
    blobs: list[tuple[str, Descriptor, str]] = []
    for kind, envelope in sorted(envelopes.items()):
        pushed = client.push_blob(repository, envelope)
        blobs.append(
            (kind, Descriptor(DSSE_MEDIA_TYPE, pushed.digest, pushed.size), predicate_type(envelope))
        )
    out: dict[str, str] = {}

    # cosign: one manifest under the .att tag, old layers kept, ours added
    att = cosign_tag(digest)
    existing = client.get_manifest(repository, att)
    layers = _layers_of(existing[0] if existing else None)
    have = {layer["digest"] for layer in layers}
    layers += [cosign_layer(d, t) for _, d, t in blobs if d.digest not in have]
    config, manifest = cosign_manifest(layers, created)
    client.push_blob(repository, config)
    out["cosign"] = f"{host}/{repository}:{att}@{client.put_manifest(repository, att, manifest)}"

    # OCI 1.1 referrers: by digest; listed under the fallback tag where there is no API
    client.push_blob(repository, EMPTY_JSON)
    added = []
    for kind, desc, ptype in blobs:
        data = referrer_manifest(desc, ptype, subject, created)
        if len(data) > MAX_MANIFEST:  # pragma: no cover - a descriptor is a few hundred bytes
            raise RegistryError(f"the {kind} referrer manifest is too large")
        ref_digest = client.put_manifest(repository, sha256_bytes(data), data)
        out[kind] = f"{host}/{repository}@{ref_digest}"
        added.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": ref_digest,
                "size": len(data),
                "artifactType": ATTESTATION_ARTIFACT_TYPE,
                "annotations": {CREATED: created, INTOTO_PREDICATE_TYPE: ptype},
            }
        )
    if not supports_referrers(client, repository, digest):
        tag = referrers_tag(digest)
        current = client.get_manifest(repository, tag)
        index = referrers_index(current[0] if current else None, added)
        out["referrers"] = (
            f"{host}/{repository}:{tag}@{client.put_manifest(repository, tag, index, OCI_INDEX)}"
        )
    return out
