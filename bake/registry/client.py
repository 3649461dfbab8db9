"""Verified reads and signed writes of a registry, over its TUF metadata.

Reading (:func:`read`) goes through the TUF client (bake.registry.updater): a
:class:`Snapshot` is one verified repository state, and every document it hands out (an
image document, a protected channel, an attestation, the policy) is a target checked
against its signed length and hash.

Writing (:func:`transact`) takes the backend's lock, verifies the current state the same
way, runs a pure planner against it, and stores what bake.registry.roles stages: target
files first, then the new role versions, the snapshot, and the timestamp last, so a writer
killed at any instant leaves the registry as it was before or after. A change a role's
threshold does not allow yet is kept as a pending change (``bake sign`` completes it).

The clock is always passed in (``now``); nothing here reads it.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Targets, Timestamp
from tuf.api.metadata import Snapshot as TufSnapshot

from bake.attest.keys import PublicKey
from bake.errors import BakeError, ConflictError, RegistryError, TrustError
from bake.registry import roles
from bake.registry.backend import Registry
from bake.registry.layout import (
    CHANNEL_ROLE,
    IMAGES,
    INDEX_PATH,
    POLICY_PATH,
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    Policy,
    channel_path,
    image_path,
    metadata_file,
    pending_file,
)
from bake.registry.model import (
    Change,
    ImageDoc,
    Release,
    add_build,
    decode_channel_doc,
    decode_image_doc,
    decode_names,
    did_you_mean,
    encode_channel_doc,
    encode_image_doc,
    encode_names,
    find_build,
    image_ref,
    new_image_doc,
    validate_name,
)
from bake.registry.roles import AnyMetadata, Signers, Staged
from bake.registry.updater import Versions, View, cache_dir, open_view, translated, trusted_root


@dataclass(frozen=True)
class Trust:
    """Where trust in a registry starts (a root.json, or root public keys as a shorthand)
    and this machine's cache of what it trusted since."""

    anchors: tuple[Path, ...]
    state: Path
    keys: tuple[PublicKey, ...] = ()  # root public keys given as objects (a writer's own key)


# --------------------------------------------------------------------------- snapshot

T = TypeVar("T")


@dataclass(frozen=True)
class RoleKeys:
    """Who signs a role of the verified metadata: its key ids and how many must sign."""

    role: str
    keyids: tuple[str, ...]
    threshold: int


def _none(*_args: str) -> None:
    return None


def _missing(stored: str) -> bytes:
    raise RegistryError(f"{stored} is not in this in-memory snapshot")


@dataclass(frozen=True)
class Snapshot:
    """One verified registry state and lazy, verified access to its documents."""

    url: str
    versions: Versions
    policy: Policy = field(default_factory=Policy)
    protected: tuple[str, ...] = ()  # channels with their own keys and threshold
    attestation_keys: tuple[PublicKey, ...] = ()  # who signs attestations (the images role)
    roles: tuple[RoleKeys, ...] = ()  # keys and thresholds of the roles the client verified
    _names: Callable[[], list[str]] = field(default=list, repr=False, compare=False)
    _target: Callable[[str], bytes | None] = field(default=_none, repr=False, compare=False)
    _stored: Callable[[str], bytes] = field(default=_missing, repr=False, compare=False)
    cache: dict[str, ImageDoc | None] = field(default_factory=dict, repr=False, compare=False)
    unavailable: dict[str, TrustError] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        docs: Iterable[ImageDoc],
        *,
        url: str = "mem:",
        serial: int = 1,
        expires: str = "9999-12-31T23:59:59Z",
        policy: Policy | None = None,
    ) -> Snapshot:
        """A snapshot of in-memory documents (for pure code and its tests)."""
        cache: dict[str, ImageDoc | None] = {doc.name: doc for doc in docs}
        versions = Versions(root=1, timestamp=serial, snapshot=serial, expires=expires)
        names = sorted(n for n in cache)
        return cls(url, versions, policy or Policy(), _names=lambda: names, cache=cache)

    @property
    def serial(self) -> int:
        return self.versions.snapshot

    @property
    def expires(self) -> str:
        return self.versions.expires

    def names(self) -> list[str]:
        return self._names()

    def get(self, name: str) -> ImageDoc | None:
        """The verified document of ``name`` (its protected channels included), or None."""
        if name in self.cache:
            return self.cache[name]
        data = self._target(image_path(validate_name(name)))
        doc = None if data is None else decode_image_doc(data, name=name)
        if doc is not None:
            own = {c: ch for c, ch in doc.channels.items() if c not in self.protected}
            for channel in self.protected:
                try:
                    raw = self._target(channel_path(channel, name))
                except TrustError as e:  # its role is not signed (yet): the channel is unusable
                    self.unavailable[channel] = e
                    continue
                if raw is not None:
                    own[channel] = decode_channel_doc(raw, name=name, channel=channel)
            for channel, ch in own.items():
                if ch.current not in doc.versions:
                    raise TrustError(
                        f"{image_ref(name, channel)} points to {ch.current}, which is not published"
                    )
            doc = replace(doc, channels=own)
        self.cache[name] = doc
        return doc

    def image(self, name: str) -> ImageDoc:
        """The verified document of ``name``; RegistryError with a did-you-mean if absent."""
        doc = self.get(name)
        if doc is None:
            names = self.names()
            raise RegistryError(
                f"no image named {name!r} in {self.url}",
                did_you_mean(name, names) or f"{len(names)} images are published; check the name",
            )
        return doc

    def target(self, path: str) -> bytes | None:
        """The bytes of any target (e.g. the deployment log), checked against its signed
        length and hash; None when no trusted metadata lists it."""
        return self._target(path)

    def images(self) -> dict[str, ImageDoc]:
        """Every image document (loads them all: for whole-registry operations only)."""
        return {name: self.image(name) for name in self.names()}

    def attestation(self, name: str, version: str, kind: str, digest: str) -> bytes:
        """An attestation envelope of a build, by the digest its verified image document
        names. Every attestation is a target of the signed metadata too (any TUF client
        finds it by path), but the image document's signed chain already pins its hash:
        bake reads it by that hash and skips a hashed-bin lookup per attestation."""
        from bake.attest.digest import sha256_bytes
        from bake.registry.layout import attestation_path, stored_target

        where = f"{image_ref(name, version)}: its {kind} attestation"
        hexd = digest.removeprefix("sha256:")
        if len(hexd) != 64 or not digest.startswith("sha256:"):
            raise TrustError(f"{where} has the digest {digest!r}, which is not sha256")
        data = self._stored(stored_target(attestation_path(name, version, kind), hexd))
        if sha256_bytes(data) != digest:  # the backend checks it too; this check is ours
            raise TrustError(f"{where} is not the one its image document names")
        return data


def _attestation_keys(view: View) -> tuple[PublicKey, ...]:
    targets = view.metadata(TARGETS).signed
    assert isinstance(targets, Targets) and targets.delegations is not None
    role = (targets.delegations.roles or {}).get(IMAGES)
    if role is None:
        return ()
    return tuple(PublicKey(k) for kid, k in targets.delegations.keys.items() if kid in role.keyids)  # type: ignore[arg-type]  # SSlibKey


def _protected(view_targets: Targets) -> tuple[str, ...]:
    assert view_targets.delegations is not None
    return tuple(
        n.removeprefix(CHANNEL_ROLE)
        for n in (view_targets.delegations.roles or {})
        if n.startswith(CHANNEL_ROLE)
    )


def _role_keys(view: View, targets: Targets) -> tuple[RoleKeys, ...]:
    root = view.metadata(ROOT).signed
    assert isinstance(root, Root)
    found = [RoleKeys(name, tuple(r.keyids), r.threshold) for name, r in root.roles.items()]
    delegated = (targets.delegations.roles or {}) if targets.delegations is not None else {}
    found += [RoleKeys(name, tuple(r.keyids), r.threshold) for name, r in delegated.items()]
    return tuple(found)


def _snapshot(view: View) -> Snapshot:
    targets = view.metadata(TARGETS).signed
    assert isinstance(targets, Targets)
    policy_bytes = view.target(POLICY_PATH)
    policy = Policy.from_bytes(policy_bytes) if policy_bytes is not None else Policy()

    def names() -> list[str]:
        data = view.target(INDEX_PATH)
        return decode_names(data) if data is not None else []

    return Snapshot(
        view.registry.url,
        view.versions(),
        policy,
        _protected(targets),
        _attestation_keys(view),
        _role_keys(view, targets),
        _names=names,
        _target=view.target,
        _stored=view.registry.read_target,
    )


def read(registry: Registry, trust: Trust) -> Snapshot:
    """The registry's current state, as the TUF client verified it."""
    root = trusted_root(registry, trust.anchors, trust.keys)
    with open_view(registry, root, trust.state) as view:
        return _snapshot(view)


# --------------------------------------------------------------------------- writing


class TrustedLoader:
    """The current, verified metadata of any role, for a writer: the TUF client's trusted
    top-level roles, and delegated roles read at the version the snapshot names and
    checked against their delegator's keys."""

    def __init__(self, registry: Registry, top: Mapping[str, AnyMetadata]) -> None:
        self.registry = registry
        self.cache: dict[str, AnyMetadata] = dict(top)

    def __call__(self, role: str) -> AnyMetadata:
        if role in self.cache:
            return self.cache[role]
        snapshot = self.cache[SNAPSHOT].signed
        assert isinstance(snapshot, TufSnapshot)
        meta = snapshot.meta.get(f"{role}.json")
        if meta is None and role.startswith(CHANNEL_ROLE):
            raise TrustError(
                f"channel {role.removeprefix(CHANNEL_ROLE)} of {self.registry.url} has no signed "
                "metadata yet: its keys have not signed its first version",
                f"sign it with a threshold of the channel's keys: bake sign {role} --sign-with KEY",
            )
        if meta is None:
            raise TrustError(f"the snapshot of {self.registry.url} names no {role} metadata")
        data = self.registry.read_metadata(metadata_file(role, meta.version))
        if data is None:
            raise RegistryError(f"{metadata_file(role, meta.version)} is missing from {self.registry.url}")
        md = Metadata.from_bytes(data)
        delegator, name = roles.delegator_of(role, self)
        try:
            delegator.verify_delegate(name, md)
        except tuf_errors.UnsignedMetadataError as e:
            raise TrustError(f"{role} metadata of {self.registry.url} is not signed by its keys: {e}") from e
        if md.signed.version != meta.version:
            raise TrustError(f"{role} metadata of {self.registry.url} is not the version its snapshot names")
        self.cache[role] = md
        return md


@dataclass(frozen=True)
class Writing:
    """What a writer holds under the registry lock."""

    snapshot: Snapshot
    load: TrustedLoader
    policy: Policy


def _top_level(view: View) -> dict[str, AnyMetadata]:
    return {r: view.metadata(r) for r in (ROOT, TIMESTAMP, SNAPSHOT, TARGETS)}


def _repair_view(registry: Registry, root: bytes, state: Path) -> dict[str, AnyMetadata]:
    """The current top-level metadata when the timestamp or snapshot expired: a writer
    holding the online key may build on it (that is how `bake refresh` un-freezes a
    registry). Root rotations still go through the TUF client; no version may go back."""
    from tuf.ngclient import Updater

    from bake.registry.updater import METADATA_URL, TARGETS_URL, RegistryFetcher

    folder = cache_dir(state, registry.url)
    updater = Updater(
        str(folder),
        METADATA_URL,
        target_base_url=TARGETS_URL,
        fetcher=RegistryFetcher(registry),
        bootstrap=root,
    )
    with contextlib.suppress(tuf_errors.ExpiredMetadataError):
        updater.refresh()
    trusted = updater._trusted_set  # python-tuf's verified state (the pinned version's)
    root_md: AnyMetadata = Metadata(trusted.root)
    top: dict[str, AnyMetadata] = {ROOT: root_md}
    raw_ts = registry.read_metadata(metadata_file(TIMESTAMP, 0))
    if raw_ts is None:
        raise RegistryError(f"{registry.url} has no timestamp")
    ts = Metadata.from_bytes(raw_ts)
    root_md.verify_delegate(TIMESTAMP, ts)
    local = trusted.get(TIMESTAMP)
    if local is not None and ts.signed.version < local.version:
        raise TrustError(f"rollback refused: {registry.url} serves an older timestamp than this machine saw")
    assert isinstance(ts.signed, Timestamp)
    top[TIMESTAMP] = ts
    for role, version in ((SNAPSHOT, ts.signed.snapshot_meta.version),):
        data = registry.read_metadata(metadata_file(role, version))
        if data is None:
            raise RegistryError(f"{metadata_file(role, version)} is missing from {registry.url}")
        md = Metadata.from_bytes(data)
        root_md.verify_delegate(role, md)
        top[role] = md
    return top


@contextlib.contextmanager
def writing(registry: Registry, trust: Trust, signers: Signers, now: datetime) -> Iterator[Writing]:
    """Hold the registry lock over its verified current state. An empty registry is set up
    first, with the online key as its root key too (`bake keys init` sets up one with
    offline root keys and thresholds)."""
    with registry.locked():
        registry.read_metadata(metadata_file(TIMESTAMP, 0))  # the commit point, read under the lock
        if registry.read_metadata(metadata_file(ROOT, 1)) is None:
            _store(
                registry,
                roles.initial([signers.online.public], 1, signers.online.public, Policy(), signers, now),
            )
        own = () if trust.anchors or trust.keys else (signers.online.public,)
        root = trusted_root(registry, trust.anchors, (*trust.keys, *own))
        try:
            with open_view(registry, root, trust.state) as view:
                top = _top_level(view)
        except TrustError as e:
            if not isinstance(e.__cause__, tuf_errors.ExpiredMetadataError):
                raise
            with translated(registry.url):
                top = _repair_view(registry, root, trust.state)
        load = TrustedLoader(registry, top)
        policy_data = _policy_bytes(registry, load)
        policy = Policy.from_bytes(policy_data) if policy_data else Policy()
        snapshot = _writer_snapshot(registry, load, policy)
        yield Writing(snapshot, load, policy)


def _policy_bytes(registry: Registry, load: TrustedLoader) -> bytes | None:
    targets = load(TARGETS).signed
    assert isinstance(targets, Targets)
    info = targets.targets.get(POLICY_PATH)
    if info is None:
        return None
    return _checked_target(registry, POLICY_PATH, info)


def _checked_target(registry: Registry, path: str, info: object) -> bytes:
    from tuf.api.metadata import TargetFile

    from bake.registry.layout import stored_target

    assert isinstance(info, TargetFile)
    data = registry.read_target(stored_target(path, info.hashes["sha256"]))
    try:
        info.verify_length_and_hashes(data)
    except tuf_errors.LengthOrHashMismatchError as e:
        raise TrustError(f"{path} in {registry.url} does not match its signed metadata: {e}") from e
    return data


def _writer_snapshot(registry: Registry, load: TrustedLoader, policy: Policy) -> Snapshot:
    """The state a writer changes, read through its own verified loader."""

    def target(path: str) -> bytes | None:
        info = load(roles.role_for(path, load)).signed
        assert isinstance(info, Targets)
        found = info.targets.get(path)
        return None if found is None else _checked_target(registry, path, found)

    def names() -> list[str]:
        data = target(INDEX_PATH)
        return decode_names(data) if data is not None else []

    targets = load(TARGETS).signed
    ts, snap, root = load(TIMESTAMP).signed, load(SNAPSHOT).signed, load(ROOT).signed
    assert isinstance(targets, Targets) and isinstance(ts, Timestamp)
    versions = Versions(root.version, ts.version, snap.version, ts.expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return Snapshot(
        registry.url,
        versions,
        policy,
        _protected(targets),
        _names=names,
        _target=target,
        _stored=registry.read_target,
    )


def _store(registry: Registry, staged: Staged) -> None:
    """Targets first, then metadata in order (the timestamp last); pending files."""
    for stored, data in staged.targets.items():
        registry.write_target(stored, data)
    for name, data in staged.metadata:
        registry.write_metadata(name, data)
    for role, data in staged.pending.items():
        registry.write_metadata(pending_file(role), data)


@dataclass(frozen=True)
class Committed:
    """A change as stored: the new snapshot version, or the roles left waiting."""

    serial: int
    pending: tuple[str, ...] = ()


Mutation = Callable[[Snapshot], tuple[Mapping[str, ImageDoc], Mapping[str, bytes]]]


def _doc_changes(writing: Writing, docs: Mapping[str, ImageDoc]) -> dict[str, bytes | None]:
    """Target files for changed image documents: protected channels in their own files."""
    changes: dict[str, bytes | None] = {}
    current = writing.snapshot.names()
    for name, doc in docs.items():
        if doc.name != name:
            raise BakeError(f"internal error: document of {doc.name!r} given as {name!r}")
        validate_name(name)
        before = writing.snapshot.get(name)
        public = {c: ch for c, ch in doc.channels.items() if c not in writing.snapshot.protected}
        changes[image_path(name)] = encode_image_doc(replace(doc, channels=public))
        for channel in writing.snapshot.protected:
            ch = doc.channels.get(channel)
            if ch is not None and (before is None or before.channels.get(channel) != ch):
                changes[channel_path(channel, name)] = encode_channel_doc(name, channel, ch)
    if any(n not in current for n in docs):
        changes[INDEX_PATH] = encode_names([*current, *docs])
    return changes


RETRIES = 6


def retried(change: Callable[[], T]) -> T:
    """Run a change again, on the new state, when another writer committed first (a
    backend with compare-and-swap said so); the change reads its state afresh each time."""
    for attempt in range(RETRIES):
        try:
            return change()
        except ConflictError:
            if attempt == RETRIES - 1:
                raise
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")


def transact(
    registry: Registry, trust: Trust, signers: Signers, mutate: Mutation, *, now: datetime
) -> tuple[Snapshot, Committed]:
    """Apply ``mutate`` (current snapshot -> changed image documents, extra target files)
    under the lock and store it signed. Nothing changed: nothing is written. A lost race
    is retried on the new state (``mutate`` runs again)."""
    return retried(lambda: _transact(registry, trust, signers, mutate, now))


def _transact(
    registry: Registry, trust: Trust, signers: Signers, mutate: Mutation, now: datetime
) -> tuple[Snapshot, Committed]:
    with writing(registry, trust, signers, now) as w:
        docs, extra = mutate(w.snapshot)
        changes = _doc_changes(w, docs)
        unchanged = [p for p, d in changes.items() if d is not None and _same(w, p, d)]
        for path in unchanged:
            del changes[path]
        changes.update(extra)
        if not changes:
            return w.snapshot, Committed(w.snapshot.serial)
        staged = roles.change_targets(changes, w.load, signers, now, w.policy)
        _store(registry, staged)
        return w.snapshot, Committed(staged.versions.get(SNAPSHOT, w.snapshot.serial), tuple(staged.pending))


def _same(w: Writing, path: str, data: bytes) -> bool:
    targets = w.load(roles.role_for(path, w.load)).signed
    assert isinstance(targets, Targets)
    info = targets.targets.get(path)
    if info is None:
        return False
    import hashlib

    return info.hashes.get("sha256") == hashlib.sha256(data).hexdigest() and info.length == len(data)


def apply(
    registry: Registry,
    trust: Trust,
    signers: Signers,
    plan: Callable[[Snapshot], Change],
    *,
    now: datetime,
) -> tuple[Committed, Change]:
    """Run a planner (e.g. bake.deploy.changes.plan_promote) in a transaction."""
    planned: list[Change] = []

    def mutate(snapshot: Snapshot) -> tuple[Mapping[str, ImageDoc], Mapping[str, bytes]]:
        planned.append(plan(snapshot))
        return planned[-1].docs, {}

    _snap, committed = transact(registry, trust, signers, mutate, now=now)
    return committed, planned[-1]


@dataclass(frozen=True)
class Published:
    name: str
    version: str  # the full version, e.g. "1.4.0+2"
    created: bool  # False when an identical build was already published
    serial: int


def plan_publish(snapshot: Snapshot, release: Release) -> tuple[Change, str]:
    """Add ``release`` to its image document. Its parent, if any, must be a published,
    non-revoked build of this registry."""
    doc = snapshot.get(release.name) or new_image_doc(release.name)
    updated, version = add_build(doc, release)  # validates the release, parent included
    if release.parent is not None:
        parent_name, _, parent_version = release.parent.rpartition("@")
        find_build(snapshot.image(parent_name), parent_version)  # raises if unknown/revoked
    ref = image_ref(release.name, version)
    if updated is doc:
        return Change({}, (f"{ref} already published",)), version
    return Change({release.name: updated}, (f"published {ref}",)), version


def publish(
    registry: Registry,
    trust: Trust,
    signers: Signers,
    release: Release,
    envelopes: Mapping[str, bytes],
    *,
    now: datetime,
) -> Published:
    """Publish one release and its attestation envelopes (by kind), idempotently."""
    from bake.registry.layout import attestation_path

    versions: list[str] = []
    created: list[bool] = []

    def mutate(snapshot: Snapshot) -> tuple[Mapping[str, ImageDoc], Mapping[str, bytes]]:
        change, version = plan_publish(snapshot, release)
        versions.append(version)
        created.append(bool(change.docs))
        if not change.docs:
            return {}, {}
        extra = {attestation_path(release.name, version, kind): data for kind, data in envelopes.items()}
        return change.docs, extra

    _snap, committed = transact(registry, trust, signers, mutate, now=now)
    return Published(release.name, versions[-1], created[-1], committed.serial)


def refresh(registry: Registry, trust: Trust, signers: Signers, *, now: datetime) -> Committed:
    """New timestamp and snapshot versions (and online roles that would expire soon):
    run it from CI well within the timestamp's lifetime, so clients never see it frozen."""

    def change() -> Committed:
        with writing(registry, trust, signers, now) as w:
            staged = roles.refreshed(w.load, signers, now, w.policy)
            _store(registry, staged)
            return Committed(staged.versions[SNAPSHOT])

    return retried(change)


def init(
    registry: Registry,
    signers: Signers,
    root_keys: Iterable[PublicKey],
    threshold: int,
    policy: Policy,
    *,
    now: datetime,
) -> Committed:
    """Set up an empty registry: root keys (k of n, they may stay offline), the online key,
    the policy. Refuses a registry that already has metadata: it is never silently reset."""
    with registry.locked():
        registry.read_metadata(metadata_file(TIMESTAMP, 0))  # the commit point, read under the lock
        if registry.read_metadata(metadata_file(ROOT, 1)) is not None:
            raise RegistryError(
                f"{registry.url} is already set up", "`bake keys` changes its keys and thresholds"
            )
        staged = roles.initial(
            list(root_keys), threshold, signers.online.public, policy.validated(), signers, now
        )
        _store(registry, staged)
        return Committed(staged.versions[SNAPSHOT])


__all__ = ["Root", "Snapshot", "Trust", "read", "transact"]


# --------------------------------------------------------------------------- keys and signatures


@dataclass(frozen=True)
class PendingChange:
    role: str
    version: int
    signed_by: tuple[str, ...]  # key ids that signed it so far
    keyids: tuple[str, ...]  # who may sign it
    threshold: int

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "version": self.version,
            "signed_by": list(self.signed_by),
            "keyids": list(self.keyids),
            "threshold": self.threshold,
        }


def change_root(
    registry: Registry, trust: Trust, signers: Signers, edit: Callable[[Root], None], *, now: datetime
) -> Committed:
    """A new root version (keys, thresholds), signed by a threshold of the old root keys
    and of the new ones; pending until it is."""
    with writing(registry, trust, signers, now) as w:
        staged = roles.change_root(edit, w.load, signers, now, w.policy)
        _store(registry, staged)
        return Committed(staged.versions.get(SNAPSHOT, w.snapshot.serial), tuple(staged.pending))


def change_delegations(
    registry: Registry, trust: Trust, signers: Signers, edit: Callable[[Targets], None], *, now: datetime
) -> Committed:
    """A new version of the targets role (e.g. a protected channel), signed by its keys."""
    with writing(registry, trust, signers, now) as w:
        staged = roles.change_delegations(edit, w.load, signers, now, w.policy)
        _store(registry, staged)
        return Committed(staged.versions.get(SNAPSHOT, w.snapshot.serial), tuple(staged.pending))


def _pending_roles(w: Writing) -> list[str]:
    targets = w.load(TARGETS).signed
    assert isinstance(targets, Targets) and targets.delegations is not None
    channels = [n for n in (targets.delegations.roles or {}) if n.startswith(CHANNEL_ROLE)]
    return [ROOT, TARGETS, *channels]


def pending(registry: Registry, trust: Trust, signers: Signers, *, now: datetime) -> list[PendingChange]:
    """The changes waiting for more signatures."""
    out = []
    with writing(registry, trust, signers, now) as w:
        for role in _pending_roles(w):
            data = registry.read_metadata(pending_file(role))
            if data is None:
                continue
            md = Metadata.from_bytes(data)
            keyids, threshold = (
                roles.wanted_keys(role, w.load) if role != ROOT else (_root_keyids(md), _root_threshold(md))
            )
            out.append(PendingChange(role, md.signed.version, tuple(md.signatures), tuple(keyids), threshold))
    return out


def _root_keyids(md: AnyMetadata) -> list[str]:
    assert isinstance(md.signed, Root)
    return list(md.signed.roles[ROOT].keyids)


def _root_threshold(md: AnyMetadata) -> int:
    assert isinstance(md.signed, Root)
    return int(md.signed.roles[ROOT].threshold)


def sign(registry: Registry, trust: Trust, signers: Signers, role: str, *, now: datetime) -> Committed:
    """Add the offline keys' signatures to a pending change; publish it once complete."""
    with writing(registry, trust, signers, now) as w:
        data = registry.read_metadata(pending_file(role))
        if data is None:
            known = ", ".join(r for r in _pending_roles(w) if registry.read_metadata(pending_file(r)))
            raise RegistryError(
                f"no change of {role} is pending in {registry.url}", f"pending: {known or 'none'}"
            )
        staged, _md = roles.complete_pending(role, data, w.load, signers, now, w.policy)
        _store(registry, staged)
        if staged.published:
            registry.delete_metadata(pending_file(role))
        return Committed(staged.versions.get(SNAPSHOT, w.snapshot.serial), tuple(staged.pending))


def drop_pending(registry: Registry, trust: Trust, signers: Signers, role: str, *, now: datetime) -> None:
    with writing(registry, trust, signers, now):
        registry.delete_metadata(pending_file(role))
