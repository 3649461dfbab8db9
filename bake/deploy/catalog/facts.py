"""What a build's signed attestations say, read only after they verify.

Each attestation is read by the digest its verified image document names
(:meth:`Snapshot.attestation`), its DSSE envelope must be signed by a key of the
registry's images role, and its statement must be about one of the build's artifact
digests: the same checks `bake resolve` applies. An attestation that fails any of them
contributes nothing but its error, which the catalog shows in its place.

Free text from a registry (check titles, package names, licence names, parameters) is
kept as text: escaping is the templates' job (autoescape). Here it is only made visible
(control and bidirectional-override characters replaced) and bounded in length, so a
page neither hides nor reorders what it shows and no single value can grow it without
limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bake.attest import sbom
from bake.attest.filemanifest import FileManifest, manifest_of
from bake.attest.predicates import checks_from_test_result, skipped_from_test_result
from bake.attest.statements import SLSA_PROVENANCE, TEST_RESULT, open_signed_statement
from bake.errors import BakeError
from bake.registry.client import Snapshot
from bake.registry.model import Build

PREDICATES = {
    "provenance": SLSA_PROVENANCE,
    "test-result": TEST_RESULT,
    "sbom": sbom.CYCLONEDX,
}
MAX_TEXT = 400  # characters of one value shown on a page
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def shown(value: object, limit: int = MAX_TEXT) -> str:
    """A value as page text: control and bidi-override characters made visible (U+FFFD),
    at most ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if _HIDDEN.search(text) is not None:
        text = _HIDDEN.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Attested:
    """One attestation of a build: its digest, who signed it, or why it was refused."""

    kind: str
    digest: str
    signer: str | None = None  # the key id that verified
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Check:
    title: str
    outcome: str  # passed | failed | warned | skipped
    reason: str = ""


@dataclass(frozen=True)
class Checked:
    result: str  # PASSED | FAILED
    checks: tuple[Check, ...]
    definitions: str  # the verify checks that ran, as JSON


@dataclass(frozen=True)
class Provenance:
    builder: str
    build_type: str
    packer: str
    started: str
    finished: str
    parameters: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, str], ...]  # (uri, digest)


@dataclass(frozen=True, order=True)
class Package:
    name: str
    arch: str
    version: str
    source: str
    licenses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facts:
    """Everything verified about one build."""

    attestations: tuple[Attested, ...] = ()
    tests: Checked | None = None
    provenance: Provenance | None = None
    packages: tuple[Package, ...] | None = None  # None: no (verified) SBOM
    files: FileManifest | None = None

    @property
    def errors(self) -> tuple[Attested, ...]:
        return tuple(a for a in self.attestations if not a.ok)


class Malformed(BakeError):
    """A verified statement that does not say what its kind must."""


def read_facts(snapshot: Snapshot, name: str, build: Build) -> Facts:
    """Open and check every attestation of ``build``; keep what verified."""
    digests = {out.digest for out in build.targets.values()}
    found: dict[str, object] = {}
    attested = []
    for kind, digest in sorted(build.attestations.items()):
        try:
            stmt, signer = _open(snapshot, name, build.full_version, kind, digest, digests)
            found[kind] = _parse(kind, stmt, digests)
        except (BakeError, ValueError) as e:
            message = e.message if isinstance(e, BakeError) else f"not valid JSON: {e}"
            attested.append(Attested(kind, digest, error=shown(message)))
            continue
        attested.append(Attested(kind, digest, signer=signer))
    tests, prov, packages, files = (found.get(k) for k in ("test-result", "provenance", "sbom", "files"))
    return Facts(
        tuple(attested),
        tests if isinstance(tests, Checked) else None,
        prov if isinstance(prov, Provenance) else None,
        packages if isinstance(packages, tuple) else None,
        files if isinstance(files, FileManifest) else None,
    )


def _open(
    snapshot: Snapshot, name: str, version: str, kind: str, digest: str, subjects: set[str]
) -> tuple[Mapping[str, object], str]:
    data = snapshot.attestation(name, version, kind, digest)  # its hash is the signed one
    envelope = json.loads(data)
    if not isinstance(envelope, dict):
        raise Malformed("the envelope is not a JSON object")
    stmt, key = open_signed_statement(envelope, snapshot.attestation_keys)
    subject = stmt.get("subject")
    about = {
        f"sha256:{s['digest']['sha256']}"
        for s in (subject if isinstance(subject, list) else [])
        if isinstance(s, dict) and isinstance(s.get("digest"), dict) and "sha256" in s["digest"]
    }
    if not about & subjects:
        raise Malformed(f"the statement is about {sorted(about)}, not about this build's artifact")
    want = PREDICATES.get(kind)
    if want is not None and stmt.get("predicateType") != want:
        raise Malformed(f"the statement is a {shown(stmt.get('predicateType'))}, not a {kind}")
    return stmt, key.keyid


def _parse(kind: str, stmt: Mapping[str, object], subjects: set[str]) -> object:
    if kind == "test-result":
        return checks_of(stmt)
    if kind == "provenance":
        return provenance_of(stmt)
    if kind == "sbom":
        return packages_of(stmt)
    if kind == "files":
        return manifest_of(stmt, sorted(subjects)[0])
    return None


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"{what} is not a list of strings")
    return value


def _object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def checks_of(stmt: Mapping[str, object]) -> Checked:
    """Each check of a test result: passed, failed, warned, or skipped by its `when:`."""
    predicate = _object(stmt.get("predicate"), "the predicate")
    result = predicate.get("result")
    if result not in ("PASSED", "FAILED"):
        raise Malformed(f"the test result is {shown(result)}, not PASSED or FAILED")
    checks = [
        *(Check(shown(t), "failed") for t in _strings(predicate.get("failedTests", []), "failedTests")),
        *(Check(shown(t), "warned") for t in _strings(predicate.get("warnedTests", []), "warnedTests")),
        *(Check(shown(t), "passed") for t in _strings(predicate.get("passedTests", []), "passedTests")),
        *(Check(shown(t), "skipped", shown(why)) for t, why in skipped_from_test_result(stmt)),
    ]
    definitions = json.dumps(checks_from_test_result(stmt), indent=1, sort_keys=True)
    return Checked(str(result), tuple(checks), shown(definitions, 20_000))


def provenance_of(stmt: Mapping[str, object]) -> Provenance:
    """A SLSA provenance v1: who built it, with what, from which inputs (by digest)."""
    predicate = _object(stmt.get("predicate"), "the predicate")
    definition = _object(predicate.get("buildDefinition"), "buildDefinition")
    run = _object(predicate.get("runDetails", {}), "runDetails")
    meta = _object(run.get("metadata", {}), "runDetails.metadata")
    internal = _object(definition.get("internalParameters", {}), "internalParameters")
    params = _object(definition.get("externalParameters", {}), "externalParameters")
    deps = definition.get("resolvedDependencies", [])
    if not isinstance(deps, list):
        raise Malformed("resolvedDependencies is not a list")
    inputs = []
    for i, dep in enumerate(deps):
        d = _object(dep, f"resolvedDependencies[{i}]")
        digest = _object(d.get("digest", {}), f"resolvedDependencies[{i}].digest")
        shown_digest = ", ".join(f"{alg}:{value}" for alg, value in sorted(digest.items()))
        inputs.append((shown(d.get("uri") or d.get("name") or "?"), shown(shown_digest)))
    builder = _object(run.get("builder", {}), "runDetails.builder")
    return Provenance(
        builder=shown(builder.get("id", "")),
        build_type=shown(definition.get("buildType", "")),
        packer=shown(internal.get("packer_version", "")),
        started=shown(meta.get("startedOn", "")),
        finished=shown(meta.get("finishedOn", "")),
        parameters=tuple((shown(k, 80), shown(v)) for k, v in sorted(params.items())),
        inputs=tuple(inputs),
    )


def _licenses(component: Mapping[str, object]) -> tuple[str, ...]:
    raw = component.get("licenses", [])
    if not isinstance(raw, list):
        raise Malformed("a component's licenses is not a list")
    out = []
    for choice in raw:
        c = _object(choice, "a licence choice")
        if isinstance(c.get("expression"), str):
            out.append(shown(c["expression"], 120))
            continue
        lic = _object(c.get("license"), "a licence")
        value = lic.get("id") or lic.get("name")
        if not isinstance(value, str):
            raise Malformed("a licence has neither an id nor a name")
        out.append(shown(value, 120))
    return tuple(out)


def packages_of(stmt: Mapping[str, object]) -> tuple[Package, ...]:
    """The components of a CycloneDX SBOM, as packages (name, arch, version, source, licences)."""
    bom = _object(stmt.get("predicate"), "the predicate")
    components = bom.get("components", [])
    if not isinstance(components, list):
        raise Malformed("components is not a list")
    out = []
    for i, raw in enumerate(components):
        c = _object(raw, f"components[{i}]")
        name, version = c.get("name"), c.get("version", "")
        if not isinstance(name, str) or not isinstance(version, str):
            raise Malformed(f"components[{i}] has no name or version")
        purl = c.get("purl")
        arch = re.search(r"[?&]arch=([^&#]+)", purl) if isinstance(purl, str) else None
        props = c.get("properties", [])
        source = next(
            (
                p.get("value")
                for p in props if isinstance(p, dict) and p.get("name") == "bake:dpkg:source"
            ),
            None,
        ) if isinstance(props, list) else None  # fmt: skip
        out.append(
            Package(
                shown(name, 200),
                shown(arch.group(1), 40) if arch else "",
                shown(version, 200),
                shown(source if isinstance(source, str) else name, 200),
                _licenses(c),
            )
        )
    return tuple(sorted(out))


def required_missing(build: Build, required: Sequence[str]) -> list[str]:
    """The attestations the registry's policy requires that the build does not have."""
    return [k for k in required if k not in build.attestations]
