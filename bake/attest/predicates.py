"""What bake attests about a good bake: provenance, test results, SBOM, file manifest.

Each is an in-toto statement about the published artifact's subjects, signed into a DSSE
envelope. The test-result carries the verify checks themselves (inline, with their
digest), so `bake drift` can re-run exactly what verified the image.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from bake import __version__
from bake.attest import sbom
from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.filemanifest import FILE_MANIFEST
from bake.attest.keys import SigningKey
from bake.attest.statements import (
    SLSA_PROVENANCE,
    TEST_RESULT,
    sign_statement,
    slsa_provenance,
    statement,
    test_result,
)
from bake.errors import BakeError
from bake.record import BuildRecord
from bake.targets.base import Evidence

BUILDER_ID = f"https://bake.invalid/builder/bake@{__version__}"
BUILD_TYPE = "https://bake.invalid/build-types/packer-{target}/v1"
CHECKS_NAME = "verify-checks.json"
SKIPPED_NAME = "verify-skipped.json"  # checks whose `when:` was false for the target


def provenance(record: BuildRecord, parent_digest: str | None) -> dict[str, object]:
    deps = sorted((k, v) for k, v in record.inputs.items() if str(v).startswith("sha256:"))
    if parent_digest:
        deps.append((f"parent:{(record.parent or {}).get('name', '')}", parent_digest))
    finished = record.created
    return slsa_provenance(
        build_type=BUILD_TYPE.format(target=record.target),
        external_parameters={
            "recipe": record.name,
            "version": record.version,
            "target": record.target,
            "bake_key": record.bake_key,
            "recipe_path": Path(record.recipe_path).name,
        },
        resolved_dependencies=deps,
        builder_id=BUILDER_ID,
        invocation_id=record.bake_key,
        started=finished,
        finished=finished,
        packer_version=record.packer_version,
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
        configuration=[("recipe", record.bake_key), *((n, sha256_bytes(d)) for n, d in inline.items())],
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


def attestations(
    record: BuildRecord,
    subjects: Sequence[tuple[str, str]],
    key: SigningKey,
    *,
    evidence: Evidence,
    parent_digest: str | None,
    now: str,
) -> dict[str, bytes]:
    """Signed DSSE envelopes (as bytes) by attestation kind; the first subject is the image."""
    subject = subjects[0]
    out = {
        "provenance": sign_statement(
            statement(subjects, SLSA_PROVENANCE, provenance(record, parent_digest)), key
        ),
        "test-result": sign_statement(statement(subjects, TEST_RESULT, test_results(record)), key),
    }
    if evidence.packages is not None:
        bom = sbom.cyclonedx(
            sbom.parse_dpkg_status(evidence.packages),
            image_name=subject[0],
            image_digest=subject[1],
            timestamp=now,
            licenses=sbom.parse_copyright_licenses(evidence.licenses) if evidence.licenses else None,
        )
        out["sbom"] = sign_statement(statement(subjects, sbom.CYCLONEDX, bom), key)
    if evidence.files is not None:
        out["files"] = sign_statement(statement(subjects, FILE_MANIFEST, evidence.files), key)
    return {k: canonical_json(v) for k, v in out.items()}
