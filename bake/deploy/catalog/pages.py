"""The catalog's pages as data, built from a verified snapshot (pure: no file, no clock).

An image is turned into its version pages (oldest first, so each is compared with the
one before it while only that one's manifest and SBOM are held), then its image page and
its overview row. A version's **status** is the test gate `bake resolve` applies, seen
from a reviewer's side: revoked, untrusted (an attestation did not verify), incomplete (a
required attestation is missing), failed (its signed test result), passed, or untested.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bake.deploy.catalog.diff import (
    FileDiff,
    FilesSummary,
    PackageDiff,
    file_diff,
    files_summary,
    package_diff,
)
from bake.deploy.catalog.facts import (
    Attested,
    Checked,
    Facts,
    Package,
    Provenance,
    read_facts,
    required_missing,
)
from bake.deploy.catalog.pictures import Graph, Timeline, lineage, timeline
from bake.deploy.outdated import Outdated
from bake.errors import BakeError
from bake.registry import semver
from bake.registry.client import RoleKeys, Snapshot
from bake.registry.model import Build, ImageDoc, Revocation, validate_name

# the worst first: an image's state on the overview is its worst channel head's
SEVERITY = ("untrusted", "failed", "revoked", "incomplete", "untested", "passed")
MAX_ROWS = 5000  # packages or checks listed on one version page; counts stay exact


@dataclass(frozen=True)
class Status:
    state: str  # one of SEVERITY
    text: str


def version_status(doc: ImageDoc, build: Build, facts: Facts, required: Sequence[str]) -> Status:
    revoked = doc.revocations.get(build.full_version)
    if revoked is not None:
        return Status("revoked", f"revoked at {revoked.at}: {revoked.reason}")
    if facts.errors:
        bad = facts.errors[0]
        return Status("untrusted", f"its {bad.kind} attestation did not verify: {bad.error}")
    missing = required_missing(build, required)
    if missing:
        return Status("incomplete", f"no {', '.join(missing)} attestation, which the registry requires")
    if facts.tests is None:
        return Status("untested", "no test result")
    if facts.tests.result != "PASSED":
        failed = sum(c.outcome == "failed" for c in facts.tests.checks)
        return Status("failed", f"its signed test result is {facts.tests.result} ({failed} failed)")
    passed = sum(c.outcome == "passed" for c in facts.tests.checks)
    return Status("passed", f"tests passed ({passed} checks)")


def parent_link(ref: str | None) -> tuple[str, str] | None:
    """``NAME@VERSION`` as (name, version) when both are valid (so it can be a link)."""
    name, _, version = (ref or "").rpartition("@")
    try:
        validate_name(name)
        semver.parse(version)
    except BakeError:
        return None
    return name, version


def worst(states: Sequence[str]) -> str:
    return min(states, key=SEVERITY.index) if states else "untested"


@dataclass(frozen=True)
class TrustInfo:
    """What every page says about the signatures behind it."""

    registry: str
    root_version: int
    timestamp_version: int
    snapshot_version: int
    expires: str
    generated: str
    roles: tuple[RoleKeys, ...]
    attestation_keys: tuple[str, ...]


def trust_info(snapshot: Snapshot, generated: str) -> TrustInfo:
    v = snapshot.versions
    return TrustInfo(
        snapshot.url,
        v.root,
        v.timestamp,
        v.snapshot,
        v.expires,
        generated,
        snapshot.roles,
        tuple(k.keyid for k in snapshot.attestation_keys),
    )


@dataclass(frozen=True)
class VersionPage:
    name: str
    version: str
    build: Build
    status: Status
    revocation: Revocation | None
    channels: tuple[str, ...]  # channels whose head it is
    attestations: tuple[Attested, ...]
    tests: Checked | None
    provenance: Provenance | None
    packages: tuple[Package, ...] | None
    package_count: int
    files: FilesSummary | None
    previous: str | None  # the version compared with
    package_diff: PackageDiff | None
    file_diff: FileDiff | None
    missing: tuple[str, ...]


@dataclass(frozen=True)
class VersionRow:
    version: str
    created: str
    bake_key: str
    parent: str | None
    targets: tuple[tuple[str, str, str], ...]  # (target, digest, ref)
    status: Status
    channels: tuple[str, ...]


@dataclass(frozen=True)
class ImagePage:
    name: str
    rows: tuple[VersionRow, ...]  # newest first
    heads: tuple[tuple[str, str, str], ...]  # (channel, version, state)
    history: tuple[tuple[str, str, str, str], ...]  # (at, channel, action, version), newest first
    revocations: tuple[tuple[str, str, str], ...]  # (version, at, reason)
    graph: Graph
    timeline: Timeline | None
    outdated: tuple[Outdated, ...]


@dataclass(frozen=True)
class OverviewRow:
    name: str
    heads: tuple[tuple[str, str, str], ...]  # (channel, version, state)
    latest: str | None
    latest_state: str
    versions: int
    revoked: int
    updated: str
    state: str
    outdated: bool


def ordered(doc: ImageDoc, problems: list[str]) -> list[Build]:
    """Builds oldest first by semver precedence; a version that does not parse is left out
    (and named in ``problems``): it gets no page and no link."""
    good = []
    for key, build in doc.versions.items():
        try:
            parsed = semver.parse(key)
            semver.build_number(parsed)
        except BakeError as e:
            problems.append(f"{doc.name}: version {key!r} left out: {e.message}")
            continue
        good.append((parsed.precedence(), build.build, build))
    return [b for *_k, b in sorted(good, key=lambda t: (t[0], t[1]))]


class ImageWalk:
    """One image, as pages. :meth:`versions` yields its version pages oldest first (a
    caller writes each and lets it go); after it ran, ``page`` and ``row`` hold the image
    page and the overview row, and ``problems`` what could not be shown."""

    def __init__(
        self,
        snapshot: Snapshot,
        doc: ImageDoc,
        *,
        parents: Mapping[str, Sequence[str]],
        children: Mapping[str, Sequence[str]],
        outdated: Sequence[Outdated],
        now: str,
    ) -> None:
        self.snapshot, self.doc, self.now = snapshot, doc, now
        self.parents, self.children = parents, children
        self.outdated = tuple(o for o in outdated if o.name == doc.name)
        self.problems: list[str] = []
        self.page: ImagePage | None = None
        self.row: OverviewRow | None = None

    def versions(self) -> Iterator[VersionPage]:
        doc, snapshot = self.doc, self.snapshot
        heads_of: dict[str, list[str]] = {}
        for channel, ch in sorted(doc.channels.items()):
            heads_of.setdefault(ch.current, []).append(channel)
        rows: list[VersionRow] = []
        previous: tuple[str, Facts] | None = None
        for build in ordered(doc, self.problems):
            v = build.full_version
            facts = read_facts(snapshot, doc.name, build)
            self.problems.extend(
                f"{doc.name}@{v}: {a.kind} attestation did not verify: {a.error}" for a in facts.errors
            )
            status = version_status(doc, build, facts, snapshot.policy.required)
            pdiff = fdiff = None
            if previous is not None:
                before = previous[1]
                if before.packages is not None and facts.packages is not None:
                    pdiff = package_diff(before.packages, facts.packages)
                if before.files is not None and facts.files is not None:
                    fdiff = file_diff(before.files, facts.files)
            yield VersionPage(
                name=doc.name,
                version=v,
                build=build,
                status=status,
                revocation=doc.revocations.get(v),
                channels=tuple(heads_of.get(v, ())),
                attestations=facts.attestations,
                tests=facts.tests,
                provenance=facts.provenance,
                packages=facts.packages[:MAX_ROWS] if facts.packages is not None else None,
                package_count=len(facts.packages or ()),
                files=files_summary(facts.files) if facts.files is not None else None,
                previous=previous[0] if previous else None,
                package_diff=pdiff,
                file_diff=fdiff,
                missing=tuple(required_missing(build, snapshot.policy.required)),
            )
            targets = tuple(
                (t, o.digest, o.ref or o.artifact_id or "") for t, o in sorted(build.targets.items())
            )
            row = VersionRow(
                v, build.created, build.bake_key, build.parent, targets, status, tuple(heads_of.get(v, ()))
            )
            rows.append(row)
            previous = (v, Facts(packages=facts.packages, files=facts.files))
        self.page, self.row = _image(doc, rows, self.parents, self.children, self.outdated, self.now)


def _image(
    doc: ImageDoc,
    rows: list[VersionRow],
    parents: Mapping[str, Sequence[str]],
    children: Mapping[str, Sequence[str]],
    outdated: Sequence[Outdated],
    now: str,
) -> tuple[ImagePage, OverviewRow]:
    state_of = {r.version: r.status.state for r in rows}
    heads = tuple(
        (c, ch.current, state_of.get(ch.current, "untrusted")) for c, ch in sorted(doc.channels.items())
    )
    history = sorted(
        ((e.at, c, e.action, e.version) for c, ch in doc.channels.items() for e in ch.history), reverse=True
    )
    revocations = tuple(
        (v, r.at, r.reason) for v, r in sorted(doc.revocations.items(), key=lambda kv: kv[1].at, reverse=True)
    )
    mine = tuple(o for o in outdated if o.name == doc.name)
    page = ImagePage(
        doc.name,
        tuple(reversed(rows)),
        heads,
        tuple(history),
        revocations,
        lineage(doc.name, parents, children),
        timeline(doc),
        mine,
    )
    latest = rows[-1] if rows else None
    times = [r.created for r in rows] + [h[0] for h in history]
    row = OverviewRow(
        name=doc.name,
        heads=heads,
        latest=latest.version if latest else None,
        latest_state=latest.status.state if latest else "untested",
        versions=len(rows),
        revoked=len(doc.revocations),
        updated=max(times) if times else "",
        state=worst([h[2] for h in heads]) if heads else (latest.status.state if latest else "untested"),
        outdated=bool(mine),
    )
    return page, row
