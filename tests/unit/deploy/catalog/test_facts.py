"""bake.deploy.catalog.facts: attestations are read only after they verify."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bake.attest.statements import TEST_RESULT, sign_statement, statement
from bake.deploy.catalog.facts import Malformed, checks_of, packages_of, read_facts, shown
from tests.unit.deploy.catalog.site import Built


def test_every_check_is_read_with_its_outcome_and_skipped_ones_with_why(built: Built) -> None:
    doc = built.snapshot.image("web")
    facts = read_facts(built.snapshot, "web", doc.versions["1.0.0+1"])
    assert facts.errors == ()
    assert facts.tests is not None and facts.tests.result == "PASSED"
    outcomes = {(c.title, c.outcome, c.reason) for c in facts.tests.checks}
    assert outcomes == {
        ("package nginx-light", "passed", ""),
        ("port 8080", "passed", ""),
        ("nginx runs as a systemd unit", "skipped", "when: target == 'qemu'"),
    }
    assert json.loads(facts.tests.definitions) == [{"package": {"name": "nginx-light"}}]
    assert {a.signer for a in facts.attestations} == {built.key.keyid}


def test_provenance_sbom_and_files_are_read(built: Built) -> None:
    build = built.snapshot.image("web").versions["1.0.0+1"]
    facts = read_facts(built.snapshot, "web", build)
    assert facts.provenance is not None and facts.provenance.packer == "1.6.6"
    assert {uri for uri, _d in facts.provenance.inputs} == {
        "pkg:generic/packer@1.6.6",
        "bake:recipe/web@1.0.0",
    }
    assert all(d.startswith("sha256:") for _u, d in facts.provenance.inputs)
    assert facts.packages is not None
    by_name = {p.name: p for p in facts.packages}
    assert set(by_name["curl"].licenses) == {"curl", "ISC"} and by_name["libold"].licenses == ()
    assert by_name["nginx-light"].arch == "amd64" and by_name["nginx-light"].version == "1.22.1-9"
    assert facts.files is not None and len(facts.files.entries) == 3


def test_an_attestation_signed_by_a_stranger_gives_nothing_but_its_error(built: Built) -> None:
    build = built.snapshot.image("app").versions["0.1.0+1"]
    facts = read_facts(built.snapshot, "app", build)
    assert facts.tests is None and facts.packages is None and facts.provenance is None and facts.files is None
    assert {a.kind for a in facts.errors} == {"files", "provenance", "sbom", "test-result"}
    assert all("no valid signature by a trusted key" in str(a.error) for a in facts.errors)


def test_a_statement_about_another_artifact_is_refused(built: Built) -> None:
    doc = built.snapshot.image("web")
    # 1.1.0+1's own signed attestations, but the build claims 1.0.0+1's artifact digest
    wrong = replace(doc.versions["1.1.0+1"], targets=doc.versions["1.0.0+1"].targets)
    refused = read_facts(built.snapshot, "web", wrong)
    assert refused.tests is None and refused.packages is None
    assert len(refused.errors) == 4
    assert all("not about this build's artifact" in str(a.error) for a in refused.errors)


def test_shown_makes_hidden_characters_visible_and_bounds_length() -> None:
    assert shown("ok\u202eevil\x1b[31m") == "ok\ufffdevil\ufffd[31m"
    assert shown("x" * 500, 10) == "x" * 9 + "…"
    assert shown({"a": 1}) == '{"a": 1}'


def test_malformed_predicates_are_refused() -> None:
    with pytest.raises(Malformed, match="not PASSED or FAILED"):
        checks_of({"predicate": {"result": "maybe"}})
    with pytest.raises(Malformed, match="failedTests is not a list of strings"):
        checks_of({"predicate": {"result": "FAILED", "failedTests": [1]}})
    with pytest.raises(Malformed, match="no name or version"):
        packages_of({"predicate": {"components": [{"version": "1"}]}})
    with pytest.raises(Malformed, match="neither an id nor a name"):
        packages_of(
            {"predicate": {"components": [{"name": "a", "version": "1", "licenses": [{"license": {}}]}]}}
        )


def test_licence_forms_of_cyclonedx_are_read() -> None:
    comps = [
        {"name": "a", "version": "1", "licenses": [{"license": {"id": "MIT"}}]},
        {"name": "b", "version": "2", "licenses": [{"expression": "GPL-2.0-only OR MIT"}]},
    ]
    pkgs = packages_of({"predicate": {"components": comps}})
    assert [p.licenses for p in pkgs] == [("MIT",), ("GPL-2.0-only OR MIT",)]


def test_a_test_result_without_skipped_checks_reads_as_before(built: Built) -> None:
    stmt = statement([("x", "sha256:" + "0" * 64)], TEST_RESULT, {"result": "FAILED", "failedTests": ["a"]})
    sign_statement(stmt, built.key)  # a valid statement either way
    got = checks_of(stmt)
    assert [(c.title, c.outcome) for c in got.checks] == [("a", "failed")]
