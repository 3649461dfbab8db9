"""bake.attest.predicates: the test result carries the checks that ran and those skipped."""

from __future__ import annotations

import base64
import json

import pytest

from bake.attest.predicates import (
    SKIPPED_NAME,
    checks_from_test_result,
    skipped_from_test_result,
    test_results,
)
from bake.attest.statements import TEST_RESULT, statement
from bake.errors import BakeError
from tests.unit.deploy.catalog.site import record

DIGEST = "sha256:" + "ab" * 32


def test_skipped_checks_travel_with_their_reason() -> None:
    predicate = test_results(record("web", "1.0.0", DIGEST))
    assert predicate["result"] == "PASSED" and predicate["failedTests"] == []
    assert predicate["passedTests"] == ["package nginx-light", "port 8080"]
    stmt = statement([("web", DIGEST)], TEST_RESULT, predicate)
    assert skipped_from_test_result(stmt) == [("nginx runs as a systemd unit", "when: target == 'qemu'")]
    assert checks_from_test_result(stmt) == [{"package": {"name": "nginx-light"}}]


def test_nothing_skipped_adds_nothing() -> None:
    predicate = test_results(record("web", "1.0.0", DIGEST, skipped=False))
    names = [c["name"] for c in predicate["configuration"]]  # type: ignore[attr-defined]
    assert names == ["recipe", "verify-checks.json"]
    assert skipped_from_test_result(statement([("web", DIGEST)], TEST_RESULT, predicate)) == []


def test_altered_skipped_list_is_refused() -> None:
    predicate = test_results(record("web", "1.0.0", DIGEST))
    for item in predicate["configuration"]:  # type: ignore[attr-defined]
        if item["name"] == SKIPPED_NAME:
            item["content"] = base64.b64encode(json.dumps([{"title": "x"}]).encode()).decode()
    with pytest.raises(BakeError, match="does not match its digest"):
        skipped_from_test_result(statement([("web", DIGEST)], TEST_RESULT, predicate))
