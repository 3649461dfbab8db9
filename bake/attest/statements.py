"""in-toto statements and the predicates bake signs: what an attestation says, and about what.

An image is trusted because a statement naming its digest is signed by a key the user
trusts. Statements are in-toto v1, wrapped in DSSE envelopes (:mod:`bake.attest.dsse`).
Everything here is pure: envelopes go out as plain dicts ready for JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from bake.attest.digest import canonical_json, split_digest
from bake.attest.dsse import open_envelope, sign_envelope
from bake.attest.keys import PublicKey, SigningKey
from bake.errors import BakeError, TrustError

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"


def statement(
    subjects: Sequence[tuple[str, str]],
    predicate_type: str,
    predicate: Mapping[str, object],
) -> dict[str, object]:
    """An in-toto Statement v1 about *subjects*, each ``(name, "sha256:<hex>")``."""
    if not subjects:
        raise BakeError("an attestation needs at least one subject")
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": name, "digest": _digest_set(d)} for name, d in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def sign_statement(stmt: Mapping[str, object], key: SigningKey) -> dict[str, object]:
    """Sign *stmt* (as canonical JSON) into a DSSE envelope."""
    return sign_envelope(canonical_json(stmt), key)


def open_statement(
    envelope: Mapping[str, object],
    trusted: Sequence[PublicKey],
    expect_subject_digest: str | None = None,
) -> dict[str, object]:
    """Verify *envelope*, parse its in-toto statement and check what it is about.

    With *expect_subject_digest*, one of the statement's subjects must have that digest.
    """
    return open_signed_statement(envelope, trusted, expect_subject_digest)[0]


def open_signed_statement(
    envelope: Mapping[str, object],
    trusted: Sequence[PublicKey],
    expect_subject_digest: str | None = None,
) -> tuple[dict[str, object], PublicKey]:
    """:func:`open_statement`, and the trusted key whose signature verified."""
    payload, signer = open_envelope(envelope, trusted)
    try:
        stmt = json.loads(
            payload,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TrustError(f"signed payload is not valid JSON: {e}") from e
    if not isinstance(stmt, dict):
        raise TrustError("signed payload is not a JSON object")
    if stmt.get("_type") != STATEMENT_V1:
        raise TrustError(f"signed payload is not an in-toto Statement v1 (_type {stmt.get('_type')!r})")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise TrustError("statement has no subject")
    if not isinstance(stmt.get("predicateType"), str):
        raise TrustError("statement has no predicateType")
    if expect_subject_digest is not None:
        _, want = split_digest(expect_subject_digest)
        found = [
            s["digest"]["sha256"]
            for s in subjects
            if isinstance(s, dict)
            and isinstance(s.get("digest"), dict)
            and isinstance(s["digest"].get("sha256"), str)
        ]
        if want not in found:
            raise TrustError(
                f"statement is not about {expect_subject_digest}: "
                f"its subjects are [{', '.join('sha256:' + h for h in found) or 'none'}]",
                hint="this attestation belongs to another image",
            )
    return stmt, signer


def digest_set(d: str) -> dict[str, str]:
    """``sha256:<hex>`` as an in-toto DigestSet: ``{"sha256": "<hex>"}``."""
    algo, hexdigest = split_digest(d)
    return {algo: hexdigest}


_digest_set = digest_set


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Parsers disagree on which duplicate wins; a signed document must mean one thing.
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# --- predicates --------------------------------------------------------------------------


Descriptor = tuple[str, str] | Mapping[str, object]


def _descriptor(item: Descriptor, key: str) -> dict[str, object]:
    """An in-toto ResourceDescriptor: a ``(KEY, "sha256:<hex>")`` pair (KEY is ``uri`` or
    ``name``), or a ready descriptor."""
    if isinstance(item, tuple):
        value, d = item
        return {key: value, "digest": _digest_set(d)}
    return dict(item)


def slsa_provenance(
    *,
    build_type: str,
    external_parameters: Mapping[str, object],
    resolved_dependencies: Sequence[Descriptor],
    builder_id: str,
    invocation_id: str,
    started: str,
    finished: str,
    packer_version: str,
    internal_parameters: Mapping[str, object] | None = None,
    byproducts: Sequence[Descriptor] = (),
) -> dict[str, object]:
    """A SLSA provenance v1 predicate (``SLSA_PROVENANCE``) for one bake build.

    *resolved_dependencies* are ``(uri, "sha256:<hex>")`` pairs or ResourceDescriptors,
    *byproducts* ``(name, "sha256:<hex>")`` pairs or ResourceDescriptors; *started* and
    *finished* are RFC 3339 timestamps.
    """
    run: dict[str, object] = {
        "builder": {"id": builder_id},
        "metadata": {
            "invocationId": invocation_id,
            "startedOn": started,
            "finishedOn": finished,
        },
    }
    if byproducts:
        run["byproducts"] = [_descriptor(b, "name") for b in byproducts]
    return {
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": dict(external_parameters),
            "internalParameters": {"packer_version": packer_version, **(internal_parameters or {})},
            "resolvedDependencies": [_descriptor(d, "uri") for d in resolved_dependencies],
        },
        "runDetails": run,
    }


TEST_RESULTS = ("PASSED", "FAILED")


def test_result(
    *,
    result: str,
    passed: Sequence[str],
    failed: Sequence[str],
    configuration: Sequence[Descriptor],
) -> dict[str, object]:
    """An in-toto test-result v0.1 predicate (``TEST_RESULT``).

    *configuration* lists what the tests ran with, as ``(name, "sha256:<hex>")`` pairs or
    ResourceDescriptors.
    """
    if result not in TEST_RESULTS:
        raise BakeError(f"test result must be one of {', '.join(TEST_RESULTS)}, not {result!r}")
    if result == "PASSED" and failed:
        raise BakeError(f"test result is PASSED but {len(failed)} test(s) failed")
    return {
        "result": result,
        "configuration": [_descriptor(c, "name") for c in configuration],
        "passedTests": list(passed),
        "warnedTests": [],
        "failedTests": list(failed),
    }


# pytest would otherwise collect the predicate builder as a test when it is imported.
test_result.__test__ = False  # type: ignore[attr-defined]  # a function attribute pytest reads
