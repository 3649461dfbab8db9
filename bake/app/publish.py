"""Publish good bakes: copy the artifact by digest, attest it, record it in the registry.

Order matters for "a failed or interrupted publish leaves the registry as it was":
artifact bytes first (content-addressed, harmless if orphaned), then, under the registry
lock, the image document and attestations as TUF target files and the metadata that signs
them, the timestamp last. A parent is published before its child, so a child's `parent`
always names a build the registry holds; a parent the registry already holds is fetched
from it, never baked again (:func:`find_published`). Every target goes
the same way: its session copies the bytes and says what the artifact holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bake import targets
from bake.app.session import RegistryAccess, Session, Writer
from bake.attest.digest import sha256_bytes
from bake.attest.predicates import attestations
from bake.errors import BakeError
from bake.infra import process
from bake.plan import Plan
from bake.record import BuildRecord, find_good
from bake.registry import client
from bake.registry.layout import ROOT, metadata_file
from bake.registry.model import Build, ImageDoc, Release, TargetOutput, absolute_ref, image_ref
from bake.registry.semver import parse as parse_semver
from bake.targets.base import FindPublished, Published, TargetSession
from bake.ui.progress import PlainReporter


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: str  # full version with build number
    created: bool
    ref: str | None
    digest: str
    attestations: Mapping[str, str]
    registry: str
    attached: Mapping[str, str] = field(default_factory=dict)  # where standard tools find them

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "ref": self.ref,
            "digest": self.digest,
            "attestations": dict(self.attestations),
            "registry": self.registry,
            "attached": dict(self.attached),
        }


def find_by_key(doc: ImageDoc | None, bake_key: str) -> tuple[str, Build] | None:
    """The newest non-revoked build of an image with this bake key."""
    if doc is None:
        return None
    hits = [
        (v, b)
        for v, b in doc.versions.items()
        if b.bake_key == bake_key and v not in doc.revocations and b.version not in doc.revocations
    ]
    if not hits:
        return None
    return max(hits, key=lambda vb: (parse_semver(vb[1].version).precedence(), vb[1].build))


def image_tag(record: BuildRecord) -> str:
    # OCI tags allow no '+': version and bake key identify the bytes
    return f"{record.version}-{record.bake_key.removeprefix('sha256:')[:12]}"


def current(writer: Writer) -> client.Snapshot | None:
    """The registry's state as its writer trusts it; None for a registry not set up yet."""
    if writer.registry.read_metadata(metadata_file(ROOT, 1)) is None:
        return None
    return client.read(writer.registry, writer.trust)


def published_version(session: Session, access: RegistryAccess, name: str, bake_key: str) -> str | None:
    """The registry's version of ``name`` with this bake key, if any (skips a whole bake)."""
    snap = current(session.writer(access))
    hit = find_by_key(snap.get(name), bake_key) if snap is not None else None
    return hit[0] if hit else None


def find_published(session: Session, access: RegistryAccess) -> FindPublished:
    """A registry lookup for the bake loop: the good, published build of a plan's bake key
    (signed metadata checked, the registry's test gate passed), so a parent is fetched by
    digest instead of being baked again."""
    from bake.deploy.resolve import resolve
    from bake.deploy.verified import check_attestations

    writer = session.writer(access)

    def find(plan: Plan) -> Published | None:
        snapshot = current(writer)
        hit = find_by_key(snapshot.get(plan.name), plan.key) if snapshot is not None else None
        if snapshot is None or hit is None or plan.target not in hit[1].targets:
            return None
        version, build = hit
        check_attestations(resolve(snapshot, image_ref(plan.name, version), plan.target), snapshot)
        out = build.targets[plan.target]
        url = writer.registry.url
        return Published(url, version, out.digest, absolute_ref(out.ref, url), out.image_id, dict(out.files))

    return find


def publish_records(
    session: Session,
    records: Sequence[BuildRecord],
    access: RegistryAccess,
    opened: Mapping[str, TargetSession] | None = None,
) -> list[PublishResult]:
    """Publish good build records. ``opened``: target sessions already open (by target
    name); others are opened here, once each, and only for targets the records have."""
    writer = session.writer(access)
    with contextlib.ExitStack() as stack:
        sessions: dict[str, TargetSession] = dict(opened or {})

        def session_for(target: str) -> TargetSession:
            if target not in sessions:
                ctx = session.bake_context(PlainReporter())
                sessions[target] = stack.enter_context(targets.get(target).session(ctx))
            return sessions[target]

        with process.terminate_as_interrupt():
            return [publish_record(session, writer, rec, session_for) for rec in records]


def publish_record(
    session: Session,
    writer: Writer,
    record: BuildRecord,
    session_for: Callable[[str], TargetSession],
) -> PublishResult:
    """Publish one good record (its parent first, if the registry lacks it)."""
    if not record.good:
        raise BakeError(
            f"{record.name} {record.version} ({record.bake_key[:19]}) is not a good bake: {record.error}",
            "only bakes that passed verification are published",
        )
    registry, now = writer.registry, session.now()
    snapshot = current(writer)
    parent_spec: str | None = None
    parent_digest: str | None = None
    parent_ref: str | None = None
    if record.parent and record.parent.get("bake_key"):
        pkey, pname = str(record.parent["bake_key"]), str(record.parent["name"])
        hit = find_by_key(snapshot.get(pname), pkey) if snapshot is not None else None
        if hit is None:
            prec = find_good(session.state, pname, record.target, pkey)
            if prec is None:
                raise BakeError(
                    f"parent {pname} ({pkey[:19]}) of {record.name} is neither published nor baked here",
                    f"bake it first: bake build {pname}.yaml",
                )
            publish_record(session, writer, prec, session_for)
            snapshot = current(writer)
            hit = find_by_key(snapshot.get(pname), pkey) if snapshot is not None else None
            assert hit is not None
        parent_spec = f"{pname}@{hit[0]}"
        out = hit[1].targets.get(record.target)
        parent_digest = out.digest if out is not None else None
        parent_ref = out.ref if out is not None else None

    target_session: TargetSession = session_for(record.target)
    stored = target_session.copy_to(record.artifact, registry, record.name, image_tag(record))
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    envelopes = attestations(
        record,
        stored.subjects,
        writer.signers.online,
        evidence=target_session.evidence(record.artifact),
        parent_digest=parent_digest,
        now=stamp,
        parent_ref=parent_ref,
        tag=image_tag(record),
    )
    blobs = {kind: sha256_bytes(data) for kind, data in envelopes.items()}
    release = Release(
        name=record.name,
        version=record.version,
        bake_key=record.bake_key,
        created=now,
        targets={
            record.target: TargetOutput(
                digest=stored.digest,
                ref=stored.ref,
                artifact_id=stored.artifact_id,
                image_id=stored.image_id,
                files=dict(stored.files),
            )
        },
        attestations=blobs,
        parent=parent_spec,
    )
    published = client.publish(registry, writer.trust, writer.signers, release, envelopes, now=now)
    # also where cosign and OCI 1.1 referrers find them, beside an image pinned by digest,
    # once the registry's metadata names them (a failed publish attaches nothing)
    attached: Mapping[str, str] = {}
    if published.created and stored.ref is not None and stored.ref.endswith(f"@{stored.digest}"):
        attached = registry.attach_attestations(stored.ref, envelopes, stamp)
    return PublishResult(
        name=record.name,
        version=published.version,
        created=published.created,
        ref=stored.ref,
        digest=stored.digest,
        attestations=blobs,
        registry=registry.url,
        attached=attached,
    )
