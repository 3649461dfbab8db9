"""bake.attest.statements: in-toto statements and predicates."""

from __future__ import annotations

import base64
import json

import pytest

from bake.attest import statements as attest
from bake.attest.digest import sha256_bytes
from bake.attest.dsse import sign_envelope
from bake.attest.keys import (
    SigningKey,
)
from bake.attest.statements import (
    SLSA_PROVENANCE,
    STATEMENT_V1,
    TEST_RESULT,
    open_statement,
    sign_statement,
    slsa_provenance,
    statement,
)
from bake.errors import BakeError, TrustError

IMAGE = sha256_bytes(b"image")
OTHER = sha256_bytes(b"other")


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


# --- in-toto statements ------------------------------------------------------------------


def test_statement_shape() -> None:
    stmt = statement([("disk.qcow2", IMAGE)], "https://example.com/p", {"a": 1})
    assert stmt == {
        "_type": STATEMENT_V1,
        "subject": [{"name": "disk.qcow2", "digest": {"sha256": IMAGE.removeprefix("sha256:")}}],
        "predicateType": "https://example.com/p",
        "predicate": {"a": 1},
    }


def test_statement_validates_subjects() -> None:
    with pytest.raises(BakeError, match="not a digest"):
        statement([("disk", "md5:abc")], "t", {})
    with pytest.raises(BakeError, match="at least one subject"):
        statement([], "t", {})


def test_statement_round_trip(key: SigningKey) -> None:
    stmt = statement([("disk", IMAGE), ("manifest", OTHER)], "t", {"x": [1, "ü"]})
    env = sign_statement(stmt, key)
    assert (
        base64.b64decode(str(env["payload"]))
        == json.dumps(stmt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert open_statement(env, [key.public]) == stmt
    assert open_statement(env, [key.public], expect_subject_digest=OTHER) == stmt


def test_open_statement_wrong_subject(key: SigningKey) -> None:
    env = sign_statement(statement([("disk", IMAGE)], "t", {}), key)
    wanted = sha256_bytes(b"something else")
    with pytest.raises(TrustError, match=f"not about {wanted}: its subjects are \\[{IMAGE}\\]"):
        open_statement(env, [key.public], expect_subject_digest=wanted)


def test_open_statement_untrusted(key: SigningKey, stranger: SigningKey) -> None:
    env = sign_statement(statement([("disk", IMAGE)], "t", {}), stranger)
    with pytest.raises(TrustError, match="no valid signature"):
        open_statement(env, [key.public])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"_type": "https://in-toto.io/Statement/v0.1"}', "not an in-toto Statement v1"),
        (
            b'{"_type": "https://in-toto.io/Statement/v1", "_type": "x", "subject": []}',
            "duplicate key",
        ),
        (b'{"_type": "https://in-toto.io/Statement/v1", "x": NaN}', "NaN is not valid JSON"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "subject": []}', "no subject"),
        (
            b'{"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "a"}]}',
            "no predicateType",
        ),
    ],
)
def test_open_statement_rejects_bad_payloads(key: SigningKey, payload: bytes, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        open_statement(sign_envelope(payload, key), [key.public])


# --- predicates --------------------------------------------------------------------------


def test_slsa_provenance() -> None:
    pred = slsa_provenance(
        build_type="https://bake.dev/packer/v1",
        external_parameters={"recipe": "web.yaml"},
        resolved_dependencies=[("https://deb.debian.org/debian", OTHER)],
        builder_id="https://bake.dev/builder/local",
        invocation_id="run-1",
        started="2024-05-01T12:00:00Z",
        finished="2024-05-01T12:10:00Z",
        packer_version="1.10.3",
    )
    assert pred == {
        "buildDefinition": {
            "buildType": "https://bake.dev/packer/v1",
            "externalParameters": {"recipe": "web.yaml"},
            "internalParameters": {"packer_version": "1.10.3"},
            "resolvedDependencies": [
                {
                    "uri": "https://deb.debian.org/debian",
                    "digest": {"sha256": OTHER.removeprefix("sha256:")},
                }
            ],
        },
        "runDetails": {
            "builder": {"id": "https://bake.dev/builder/local"},
            "metadata": {
                "invocationId": "run-1",
                "startedOn": "2024-05-01T12:00:00Z",
                "finishedOn": "2024-05-01T12:10:00Z",
            },
        },
    }
    assert SLSA_PROVENANCE == "https://slsa.dev/provenance/v1"


def test_test_result_predicate() -> None:
    pred = attest.test_result(
        result="FAILED",
        passed=["test_ssh"],
        failed=["test_ntp"],
        configuration=[("verify/test_image.py", OTHER)],
    )
    assert pred == {
        "result": "FAILED",
        "configuration": [
            {"name": "verify/test_image.py", "digest": {"sha256": OTHER.removeprefix("sha256:")}}
        ],
        "passedTests": ["test_ssh"],
        "warnedTests": [],
        "failedTests": ["test_ntp"],
    }
    assert TEST_RESULT == "https://in-toto.io/attestation/test-result/v0.1"


def test_test_result_validates() -> None:
    with pytest.raises(BakeError, match="must be one of"):
        attest.test_result(result="passed", passed=[], failed=[], configuration=[])
    with pytest.raises(BakeError, match="PASSED but 1 test"):
        attest.test_result(result="PASSED", passed=[], failed=["t"], configuration=[])


def test_attested_image_end_to_end(key: SigningKey) -> None:
    pred = attest.test_result(result="PASSED", passed=["a"], failed=[], configuration=[])
    env = sign_statement(statement([("img", IMAGE)], TEST_RESULT, pred), key)
    opened = open_statement(json.loads(json.dumps(env)), [key.public], IMAGE)
    assert opened["predicateType"] == TEST_RESULT
    assert opened["predicate"] == pred
