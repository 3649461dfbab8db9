"""What bake attests about a good bake: provenance, test results, SBOM, file manifest.

Each is an in-toto statement about the published artifact's subjects, signed into a DSSE
envelope. The test-result carries the verify checks themselves (inline, with their
digest), so `bake drift` can re-run exactly what verified the image.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from bake import __version__
from bake.attest import sbom
from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.filemanifest import FILE_MANIFEST
from bake.attest.keys import SigningKey
from bake.attest.statements import (
    SLSA_PROVENANCE,
    TEST_RESULT,
    digest_set,
    sign_statement,
    slsa_provenance,
    statement,
    test_result,
)
from bake.errors import BakeError
from bake.infra.upstream import hashed_url
from bake.plan import FORMAT as PLAN_FORMAT
from bake.record import BuildRecord
from bake.targets.base import Evidence

BUILDER_ID = f"https://bake.invalid/builder/bake@{__version__}"
BUILD_TYPE = "https://bake.invalid/build-types/packer-{target}/v1"
CHECKS_NAME = "verify-checks.json"
SKIPPED_NAME = "verify-skipped.json"  # checks whose `when:` was false for the target
_INVOCATION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://bake.invalid/invocation")

# One URI scheme per kind of input (resolvedDependencies), each a URI with a scheme:
#   the resolved recipe (steps, checks, target config after vars)  bake:recipe/NAME@VERSION
#   the recipe file, a file a step ships (as read: a template's    file:PATH (relative to the
#     source, not its output, which is a byproduct)                  recipe's folder)
#   a Packer template shipped with bake                            bake:template/FILE
#   the compiler's format version                                  bake:format/FORMAT
#   the Packer that ran                                            pkg:generic/packer@VERSION
#   the parent image, by its published digest                      pkg:oci/NAME@sha256:… (a
#                                                                    VM: pkg:generic/NAME@VERSION)
#   the Debian mirror's state (the file hashed)                    https://MIRROR/dists/SUITE/InRelease
# Byproducts: the rendered Packer template and step scripts (packer:FILE) and each template
# step's rendered output (rendered:PATH), by name and digest.


def _q(text: str, safe: str = "/") -> str:
    return quote(text, safe=safe)


def recipe_uri(name: str, version: str) -> str:
    """``bake:recipe/NAME@VERSION``: the resolved recipe (provenance, image annotations)."""
    return f"bake:recipe/{_q(name)}@{_q(version)}"


def input_uri(name: str, record: BuildRecord) -> str | None:
    """The URI of the bake input *name* (a key of a record's inputs or sources); None for
    an input named otherwise (the parent, by its published digest)."""
    kind, _, rest = name.partition(":")
    if name == "recipe":
        return recipe_uri(record.name, record.version)
    if name == "packer":
        return f"pkg:generic/packer@{_q(record.packer_version, safe='')}"
    if name == "format":
        return f"bake:format/{_q(PLAN_FORMAT)}"
    if kind in ("file", "recipe-file"):
        return f"file:{_q(rest)}"
    if kind == "template":
        return f"bake:template/{_q(rest)}"
    if kind == "upstream":
        return hashed_url(name)
    if kind == "parent":
        return None
    return f"bake:input/{_q(name, safe='')}"


def parent_uri(record: BuildRecord, digest: str, ref: str | None = None) -> str:
    """The parent image by its published digest: an ``oci`` purl (with the registry
    repository where it has one), or for a VM image a ``generic`` purl of its disk."""
    parent = record.parent or {}
    name = str(parent.get("name") or "parent")
    if record.artifact.files:
        version = str(parent.get("version") or "")
        return sbom.generic_purl(name, version or "unknown", digest)
    repo = ref.rsplit("@", 1)[0] if ref and "@" in ref and "/" in ref.split("@")[0] else None
    if repo is not None and repo.startswith(("oci-layout:", "oci:")):
        repo = None
    return sbom.oci_purl(name, digest, repository_url=repo)


def resolved_dependencies(
    record: BuildRecord, parent_digest: str | None, parent_ref: str | None = None
) -> list[dict[str, object]]:
    """Every input of the bake as an in-toto ResourceDescriptor (uri and digest as read)."""
    digests = {k: v for k, v in record.inputs.items() if str(v).startswith("sha256:")}
    digests.update(record.sources)  # a template step's source, as read; the recipe file
    out: list[dict[str, object]] = []
    for name, digest in sorted(digests.items()):
        uri = input_uri(name, record)
        if uri is not None:
            out.append({"name": name, "uri": uri, "digest": digest_set(digest)})
    if parent_digest:
        parent = str((record.parent or {}).get("name", ""))
        out.append(
            {
                "name": f"parent:{parent}",
                "uri": parent_uri(record, parent_digest, parent_ref),
                "digest": digest_set(parent_digest),
            }
        )
    return out


def invocation_id(record: BuildRecord) -> str:
    """The bake run's own id; for a record from before runs had one, one derived from its
    bake key and end time (unique per bake all the same)."""
    if record.invocation_id:
        return f"urn:uuid:{record.invocation_id}"
    return uuid.uuid5(_INVOCATION_NAMESPACE, f"{record.bake_key}@{record.created}").urn


def provenance(
    record: BuildRecord, parent_digest: str | None, parent_ref: str | None = None
) -> dict[str, object]:
    internal: dict[str, object] = {}
    parent_key = (record.parent or {}).get("bake_key")
    if parent_key:
        internal["parent_bake_key"] = str(parent_key)
    return slsa_provenance(
        build_type=BUILD_TYPE.format(target=record.target),
        external_parameters={
            "recipe": record.name,
            "version": record.version,
            "target": record.target,
            "bake_key": record.bake_key,
            "recipe_path": Path(record.recipe_path).name,
        },
        resolved_dependencies=resolved_dependencies(record, parent_digest, parent_ref),
        builder_id=BUILDER_ID,
        invocation_id=invocation_id(record),
        started=record.started or record.created,
        finished=record.created,
        packer_version=record.packer_version,
        internal_parameters=internal,
        byproducts=[
            {"name": name, "digest": digest_set(digest)} for name, digest in sorted(record.byproducts.items())
        ],
    )


def test_results(record: BuildRecord) -> dict[str, object]:
    """The record's verification as a test-result predicate: checks skipped by their
    `when:` are neither passed nor failed (they did not run)."""
    results = record.verify.get("results") or []
    passed = [str(r["title"]) for r in results if r.get("outcome") == "passed"]
    failed = [str(r["title"]) for r in results if r.get("outcome") not in ("passed", "skipped")]
    skipped = [
        {"title": str(r["title"]), "reason": str(r.get("message") or "")}
        for r in results
        if r.get("outcome") == "skipped"
    ]
    inline = {CHECKS_NAME: canonical_json(list(record.verify.get("checks") or []))}
    if skipped:  # absent when nothing was skipped: such predicates read as before
        inline[SKIPPED_NAME] = canonical_json(skipped)
    predicate = test_result(
        result="PASSED" if not failed else "FAILED",
        passed=passed,
        failed=failed,
        configuration=[
            {
                "name": "recipe",
                "uri": input_uri("recipe", record),
                "digest": digest_set(record.inputs.get("recipe") or record.bake_key),
            },
            *((n, sha256_bytes(d)) for n, d in inline.items()),
        ],
    )
    # the checks themselves, inline (an in-toto ResourceDescriptor may carry `content`),
    # so that `bake drift` can re-run exactly what verified the image; and the checks
    # skipped by their `when:`, which the predicate's own lists have no place for
    config = predicate["configuration"]
    assert isinstance(config, list)
    for item in config:
        if isinstance(item, dict) and item.get("name") in inline:
            item["content"] = base64.b64encode(inline[str(item["name"])]).decode()
            item["mediaType"] = "application/json"
    return predicate


# pytest would otherwise collect the predicate builder as a test when it is imported.
test_results.__test__ = False  # type: ignore[attr-defined]  # a function attribute pytest reads


def _inline(stmt: Mapping[str, object], name: str) -> object:
    """The JSON content a test-result's configuration carries under *name* (None if absent)."""
    predicate = stmt.get("predicate")
    config = predicate.get("configuration") if isinstance(predicate, dict) else None
    for item in config if isinstance(config, list) else []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get("content"), str):
            raw = base64.b64decode(item["content"])
            digest = item.get("digest", {})
            if isinstance(digest, dict) and sha256_bytes(raw) != f"sha256:{digest.get('sha256')}":
                raise BakeError(f"{name} in the test-result attestation does not match its digest")
            return json.loads(raw)
    return None


def checks_from_test_result(stmt: Mapping[str, object]) -> list[dict[str, object]]:
    """The verify checks a test-result attestation carries (empty if none)."""
    data = _inline(stmt, CHECKS_NAME)
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


def skipped_from_test_result(stmt: Mapping[str, object]) -> list[tuple[str, str]]:
    """The checks a test result records as skipped by their `when:`: (title, reason)."""
    data = _inline(stmt, SKIPPED_NAME)
    out = []
    for item in data if isinstance(data, list) else []:
        if not (isinstance(item, dict) and isinstance(item.get("title"), str)):
            raise BakeError(f"{SKIPPED_NAME} in the test-result attestation is not a list of checks")
        out.append((item["title"], str(item.get("reason") or "")))
    return out


def image_of(record: BuildRecord, subject: tuple[str, str], tag: str | None = None) -> sbom.Image:
    """The artifact as the SBOM's ``metadata.component``: a container image by its ``oci``
    purl (with its registry repository, where it has one), a VM image by its disk."""
    where, digest = subject
    if record.artifact.files:
        return sbom.Image(
            record.name,
            record.version,
            digest,
            sbom.generic_purl(record.name, record.version, digest),
            type="operating-system",
        )
    local = where.startswith(("oci-layout:", "oci:")) or "/" not in where
    purl = sbom.oci_purl(record.name, digest, repository_url=None if local else where, tag=tag)
    return sbom.Image(record.name, record.version, digest, purl)


def attestations(
    record: BuildRecord,
    subjects: Sequence[tuple[str, str]],
    key: SigningKey,
    *,
    evidence: Evidence,
    parent_digest: str | None,
    now: str,
    parent_ref: str | None = None,
    tag: str | None = None,
) -> dict[str, bytes]:
    """Signed DSSE envelopes (as bytes) by attestation kind; the first subject is the image."""
    subject = subjects[0]
    out = {
        "provenance": sign_statement(
            statement(subjects, SLSA_PROVENANCE, provenance(record, parent_digest, parent_ref)), key
        ),
        "test-result": sign_statement(statement(subjects, TEST_RESULT, test_results(record)), key),
    }
    if evidence.packages is not None:
        bom = sbom.cyclonedx(
            sbom.parse_dpkg_status(evidence.packages),
            image_name=record.name,
            image_digest=subject[1],
            timestamp=now,
            image=image_of(record, subject, tag),
            copyrights=evidence.copyrights,
            distro=sbom.os_release_distro(evidence.os_release),
        )
        out["sbom"] = sign_statement(statement(subjects, sbom.CYCLONEDX, bom), key)
    if evidence.files is not None:
        out["files"] = sign_statement(statement(subjects, FILE_MANIFEST, evidence.files), key)
    return {k: canonical_json(v) for k, v in out.items()}
