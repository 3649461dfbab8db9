"""Writing a bake registry's TUF metadata with python-tuf's Metadata API (pure).

Every change is a new repository state built on the metadata the TUF client trusts: new
target files, new versions of the roles that list them (signed by their keys), then a new
snapshot and last a new timestamp (the online key). Nothing here writes; the caller stores
what :class:`Staged` holds, targets first and the timestamp last, so a reader sees the old
state or the new one. A role whose threshold the given keys do not meet is not published:
its new version waits, partially signed, as a pending change that `bake sign` completes.

See bake.registry.layout for the roles, paths and policy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from bake.attest.keys import PublicKey, SigningKey
from bake.errors import BakeError, TrustError
from bake.registry.layout import (
    BIN_BITS,
    BINS,
    CHANNEL_ROLE,
    HEX,
    IMAGES,
    INDEX_PATH,
    POLICY_PATH,
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    Policy,
    channel_role,
    lifetime,
    metadata_file,
    pending_file,
    stored_target,
)

SERIALIZER = JSONSerializer(compact=True)
AnyMetadata = Metadata[Any]  # a role's metadata, whatever the role
Loader = Callable[[str], AnyMetadata]  # role -> its current, trusted metadata


@dataclass(frozen=True)
class Signers:
    """The keys at hand: the online key, and any offline ones (`--sign-with`)."""

    online: SigningKey
    offline: tuple[SigningKey, ...] = ()

    def all(self) -> tuple[SigningKey, ...]:
        return (self.online, *[k for k in self.offline if k.keyid != self.online.keyid])


@dataclass
class Staged:
    """What one change writes, in order: target files, role metadata, snapshot, timestamp."""

    targets: dict[str, bytes] = field(default_factory=dict)  # stored path -> bytes
    metadata: list[tuple[str, bytes]] = field(default_factory=list)  # file name -> bytes, in order
    pending: dict[str, bytes] = field(default_factory=dict)  # role -> partially signed metadata
    versions: dict[str, int] = field(default_factory=dict)  # role -> its new version

    @property
    def published(self) -> bool:
        return bool(self.metadata)


def _bump(md: AnyMetadata, role: str, now: datetime, policy: Policy) -> None:
    md.signed.version += 1
    md.signed.expires = (now + lifetime(role, policy)).replace(microsecond=0)
    md.signatures.clear()


def _sign(md: AnyMetadata, signers: Sequence[SigningKey], wanted: Sequence[str]) -> None:
    for key in signers:
        if key.keyid in wanted and key.keyid not in md.signatures:
            md.sign(key.signer, append=True)


def serialize(md: AnyMetadata) -> bytes:
    return md.to_bytes(SERIALIZER)


# --------------------------------------------------------------------------- a new registry


def initial(
    root_keys: Sequence[PublicKey],
    threshold: int,
    online: PublicKey,
    policy: Policy,
    signers: Signers,
    now: datetime,
) -> Staged:
    """Version 1 of every role. Root and targets are signed by the root keys at hand."""
    if threshold < 1 or threshold > len(root_keys):
        raise BakeError(f"a threshold of {threshold} needs 1 to {len(root_keys)} root keys", exit_code=2)

    def expires(role: str) -> datetime:
        return (now + lifetime(role, policy)).replace(microsecond=0)

    root = Root(expires=expires(ROOT), consistent_snapshot=True)
    for role in (ROOT, TARGETS):
        for key in root_keys:
            root.add_key(key.key, role)
        root.roles[role].threshold = threshold
    for role in (SNAPSHOT, TIMESTAMP):
        root.add_key(online.key, role)
    targets = Targets(expires=expires(TARGETS))
    targets.targets[POLICY_PATH] = TargetFile.from_data(POLICY_PATH, policy.to_bytes(), ["sha256"])
    images_role = DelegatedRole(IMAGES, [online.keyid], 1, True, path_hash_prefixes=list(HEX))
    targets.delegations = Delegations({online.keyid: online.key}, roles={IMAGES: images_role})
    images = Targets(expires=expires(IMAGES))
    succinct = SuccinctRoles([online.keyid], 1, BIN_BITS, BINS)
    images.delegations = Delegations({online.keyid: online.key}, succinct_roles=succinct)
    staged = Staged()
    index = b"[]"
    staged.targets[stored_target(INDEX_PATH, _sha(index))] = index
    staged.targets[stored_target(POLICY_PATH, _sha(policy.to_bytes()))] = policy.to_bytes()
    snapshot = Snapshot(expires=expires(SNAPSHOT))
    roles: list[tuple[str, Targets]] = [(TARGETS, targets), (IMAGES, images)]
    for name in succinct.get_roles():
        bin_md = Targets(expires=(now + lifetime(name, policy)).replace(microsecond=0))
        if succinct.get_role_for_target(INDEX_PATH) == name:
            bin_md.targets[INDEX_PATH] = TargetFile.from_data(INDEX_PATH, index, ["sha256"])
        roles.append((name, bin_md))
    root_md = Metadata(root)
    _sign(root_md, signers.all(), root.roles[ROOT].keyids)
    _require(
        root.get_verification_result(ROOT, root_md.signed_bytes, root_md.signatures).verified, ROOT, threshold
    )
    staged.metadata.append((metadata_file(ROOT, 1), serialize(root_md)))
    for name, signed in roles:
        md: AnyMetadata = Metadata(signed)
        wanted = root.roles[TARGETS].keyids if name == TARGETS else [online.keyid]
        _sign(md, signers.all(), wanted)
        if name == TARGETS:
            result = root.get_verification_result(TARGETS, md.signed_bytes, md.signatures)
            _require(result.verified, TARGETS, threshold)
        staged.metadata.append((metadata_file(name, 1), serialize(md)))
        snapshot.meta[f"{name}.json"] = MetaFile(version=1)
    timestamp = Timestamp(expires=expires(TIMESTAMP), snapshot_meta=MetaFile(version=1))
    for name, signed_role in ((SNAPSHOT, snapshot), (TIMESTAMP, timestamp)):
        top: AnyMetadata = Metadata(signed_role)
        top.sign(signers.online.signer)
        staged.metadata.append((metadata_file(name, 1), serialize(top)))
        staged.versions[name] = 1
    return staged


def _require(ok: bool, role: str, threshold: int) -> None:
    if not ok:
        raise TrustError(
            f"the {role} role needs {threshold} signature(s) from its keys to start a registry",
            "pass the root keys with --sign-with (and the online key with --key)",
        )


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _finish(
    staged: Staged,
    snapshot: AnyMetadata,
    timestamp: AnyMetadata,
    signers: Signers,
    now: datetime,
    policy: Policy,
) -> None:
    """A new snapshot of the staged role versions, and the timestamp naming it."""
    assert isinstance(snapshot.signed, Snapshot) and isinstance(timestamp.signed, Timestamp)
    for role, version in staged.versions.items():
        snapshot.signed.meta[f"{role}.json"] = MetaFile(version=version)
    _bump(snapshot, SNAPSHOT, now, policy)
    snapshot.sign(signers.online.signer)
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
    _bump(timestamp, TIMESTAMP, now, policy)
    timestamp.sign(signers.online.signer)
    staged.metadata.append((metadata_file(SNAPSHOT, snapshot.signed.version), serialize(snapshot)))
    staged.metadata.append((metadata_file(TIMESTAMP, timestamp.signed.version), serialize(timestamp)))
    staged.versions[SNAPSHOT] = snapshot.signed.version
    staged.versions[TIMESTAMP] = timestamp.signed.version


# --------------------------------------------------------------------------- changes


def delegator_of(role: str, load: Loader) -> tuple[AnyMetadata, str]:
    """The metadata that delegates ``role`` (and the name it delegates under)."""
    if role in (ROOT, TARGETS, SNAPSHOT, TIMESTAMP):
        return load(ROOT), role
    if role.startswith(BINS + "-"):
        return load(IMAGES), role
    return load(TARGETS), role


def role_for(path: str, load: Loader) -> str:
    """The role whose metadata lists ``path`` (the first delegation that matches)."""
    if path == POLICY_PATH:
        return TARGETS
    targets = load(TARGETS).signed
    assert isinstance(targets, Targets) and targets.delegations is not None
    for role in (targets.delegations.roles or {}).values():
        if role.is_delegated_path(path):
            if role.name != IMAGES:
                return role.name
            images = load(IMAGES).signed
            assert isinstance(images, Targets) and images.delegations is not None
            assert images.delegations.succinct_roles is not None
            return images.delegations.succinct_roles.get_role_for_target(path)
    raise TrustError(f"no role of this registry may list {path}")


def wanted_keys(role: str, load: Loader) -> tuple[list[str], int]:
    """The key ids that may sign ``role`` and how many must."""
    delegator, name = delegator_of(role, load)
    signed = delegator.signed
    if isinstance(signed, Root):
        r: Role = signed.roles[name]
        return list(r.keyids), r.threshold
    assert isinstance(signed, Targets)
    found = signed.get_delegated_role(name)
    return list(found.keyids), found.threshold


def verified(role: str, md: AnyMetadata, load: Loader) -> bool:
    delegator, name = delegator_of(role, load)
    signed = delegator.signed
    assert isinstance(signed, Root | Targets)
    return signed.get_verification_result(name, md.signed_bytes, md.signatures).verified


def change_targets(
    changes: Mapping[str, bytes | None],
    load: Loader,
    signers: Signers,
    now: datetime,
    policy: Policy,
) -> Staged:
    """A new state with ``changes`` (target path -> new bytes, or None to remove it).

    When a changed role lacks signatures, nothing is published: the staged result holds
    that role's partially signed new version as pending, and no metadata."""
    by_role: dict[str, dict[str, bytes | None]] = {}
    for path, data in changes.items():
        by_role.setdefault(role_for(path, load), {})[path] = data
    staged = Staged()
    edited: list[tuple[str, AnyMetadata]] = []
    for role, items in sorted(by_role.items()):
        md = copy.deepcopy(load(role))
        assert isinstance(md.signed, Targets)
        for path, data in sorted(items.items()):
            if data is None:
                md.signed.targets.pop(path, None)
                continue
            info = TargetFile.from_data(path, data, ["sha256"])
            md.signed.targets[path] = info
            staged.targets[stored_target(path, info.hashes["sha256"])] = data
        _bump(md, role, now, policy)
        _sign(md, signers.all(), wanted_keys(role, load)[0])
        edited.append((role, md))
    waiting = [(role, md) for role, md in edited if not verified(role, md, load)]
    if waiting:
        if len(edited) > 1:
            raise TrustError(
                f"this change needs more signatures for {waiting[0][0]}, and also changes "
                f"{', '.join(r for r, _ in edited if r != waiting[0][0])}",
                "make the change that needs several signatures on its own",
            )
        role, md = waiting[0]
        staged.pending[role] = serialize(md)
        return staged
    for role, md in edited:
        staged.metadata.append((metadata_file(role, md.signed.version), serialize(md)))
        staged.versions[role] = md.signed.version
    _finish(staged, copy.deepcopy(load(SNAPSHOT)), copy.deepcopy(load(TIMESTAMP)), signers, now, policy)
    return staged


def complete_pending(
    role: str, pending: bytes, load: Loader, signers: Signers, now: datetime, policy: Policy
) -> tuple[Staged, AnyMetadata]:
    """Add the signatures at hand to a pending role version; publish it once its threshold
    is met (else the staged result holds it, better signed, as still pending)."""
    md = Metadata.from_bytes(pending)
    current_version = _current_version(role, load)
    if md.signed.version != current_version + 1:
        raise TrustError(
            f"the pending change of {role} was made on version {md.signed.version - 1}, "
            f"but {role} is at version {current_version} now",
            "make the change again (`bake pending --drop` removes the stale one)",
        )
    wanted = wanted_keys(role, load)[0] if role != ROOT else _root_signers(md, load)
    _sign(md, signers.all(), wanted)
    staged = Staged()
    done = _root_complete(md, load) if role == ROOT else verified(role, md, load)
    if not done:
        staged.pending[role] = serialize(md)
        return staged, md
    staged.metadata.append((metadata_file(role, md.signed.version), serialize(md)))
    if role != ROOT:
        staged.versions[role] = md.signed.version
    _finish(staged, copy.deepcopy(load(SNAPSHOT)), copy.deepcopy(load(TIMESTAMP)), signers, now, policy)
    return staged, md


def _current_version(role: str, load: Loader) -> int:
    """The published version of ``role``; 0 for a delegated role not published yet."""
    if role in (ROOT, TARGETS, SNAPSHOT, TIMESTAMP):
        return int(load(role).signed.version)
    snapshot = load(SNAPSHOT).signed
    assert isinstance(snapshot, Snapshot)
    meta = snapshot.meta.get(f"{role}.json")
    return meta.version if meta is not None else 0


def _root_signers(new: AnyMetadata, load: Loader) -> list[str]:
    old = load(ROOT).signed
    assert isinstance(old, Root) and isinstance(new.signed, Root)
    return list({*old.roles[ROOT].keyids, *new.signed.roles[ROOT].keyids})


def _root_complete(new: AnyMetadata, load: Loader) -> bool:
    old = load(ROOT).signed
    assert isinstance(old, Root) and isinstance(new.signed, Root)
    return new.signed.get_root_verification_result(old, new.signed_bytes, new.signatures).verified


def change_root(
    edit: Callable[[Root], None], load: Loader, signers: Signers, now: datetime, policy: Policy
) -> Staged:
    """A new root version (keys, thresholds): signed by a threshold of the old root keys
    AND of the new ones, as TUF requires; otherwise pending."""
    md = copy.deepcopy(load(ROOT))
    assert isinstance(md.signed, Root)
    edit(md.signed)
    _bump(md, ROOT, now, policy)
    _sign(md, signers.all(), _root_signers(md, load))
    staged = Staged()
    if not _root_complete(md, load):
        staged.pending[ROOT] = serialize(md)
        return staged
    staged.metadata.append((metadata_file(ROOT, md.signed.version), serialize(md)))
    _finish(staged, copy.deepcopy(load(SNAPSHOT)), copy.deepcopy(load(TIMESTAMP)), signers, now, policy)
    return staged


def change_delegations(
    edit: Callable[[Targets], None], load: Loader, signers: Signers, now: datetime, policy: Policy
) -> Staged:
    """A new version of the top-level targets role (delegations: protected channels),
    signed by the targets keys at hand; otherwise pending."""
    md = copy.deepcopy(load(TARGETS))
    assert isinstance(md.signed, Targets)
    edit(md.signed)
    _bump(md, TARGETS, now, policy)
    _sign(md, signers.all(), wanted_keys(TARGETS, load)[0])
    staged = Staged()
    if not verified(TARGETS, md, load):
        staged.pending[TARGETS] = serialize(md)
        return staged
    staged.metadata.append((metadata_file(TARGETS, md.signed.version), serialize(md)))
    staged.versions[TARGETS] = md.signed.version
    for role in _new_delegated_roles(md.signed, load):
        # version 1 of a new channel role lists nothing; it is published once a threshold
        # of the channel's own keys signed it (now, or later with `bake sign`)
        fresh: AnyMetadata = Metadata(Targets(expires=(now + lifetime(role, policy)).replace(microsecond=0)))
        found = md.signed.get_delegated_role(role)
        _sign(fresh, signers.all(), found.keyids)
        if md.signed.get_verification_result(role, fresh.signed_bytes, fresh.signatures).verified:
            staged.versions[role] = 1
            staged.metadata.append((metadata_file(role, 1), serialize(fresh)))
        else:
            staged.pending[role] = serialize(fresh)
    _finish(staged, copy.deepcopy(load(SNAPSHOT)), copy.deepcopy(load(TIMESTAMP)), signers, now, policy)
    return staged


def _new_delegated_roles(targets: Targets, load: Loader) -> list[str]:
    """Channel roles the new targets delegates that have no metadata yet. Their version 1
    lists nothing; like every delegated role's, it needs a threshold of the role's own keys,
    and until it has them the channel cannot move (its pending file waits for `bake sign`)."""
    snapshot = load(SNAPSHOT).signed
    assert isinstance(snapshot, Snapshot) and targets.delegations is not None
    return [
        name
        for name in (targets.delegations.roles or {})
        if name.startswith(CHANNEL_ROLE) and f"{name}.json" not in snapshot.meta
    ]


def protect_channel(channel: str, keys: Sequence[PublicKey], threshold: int) -> Callable[[Targets], None]:
    """An edit of targets: channel C is listed by role channel-C (k of n keys) only."""
    if threshold < 1 or threshold > len(keys):
        raise BakeError(f"a threshold of {threshold} needs 1 to {len(keys)} keys", exit_code=2)

    def edit(targets: Targets) -> None:
        assert targets.delegations is not None and targets.delegations.roles is not None
        name = channel_role(channel)
        role = DelegatedRole(name, [k.keyid for k in keys], threshold, True, paths=[f"channels/{channel}/*"])
        for key in keys:
            targets.delegations.keys[key.keyid] = key.key
        # protected channels come first: the catch-all `images` role must never speak for them
        roles = {name: role, **{n: r for n, r in targets.delegations.roles.items() if n != name}}
        targets.delegations.roles = roles

    return edit


def refreshed(load: Loader, signers: Signers, now: datetime, policy: Policy) -> Staged:
    """New snapshot and timestamp versions, and new versions of the online roles (images,
    bins) that would expire before the next refresh is due."""
    staged = Staged()
    horizon = now + lifetime(SNAPSHOT, policy)
    snapshot = load(SNAPSHOT).signed
    assert isinstance(snapshot, Snapshot)
    for filename in snapshot.meta:
        role = filename.removesuffix(".json")
        if role != IMAGES and not role.startswith(BINS + "-"):
            continue
        md = copy.deepcopy(load(role))
        if md.signed.expires > horizon:
            continue
        _bump(md, role, now, policy)
        _sign(md, signers.all(), wanted_keys(role, load)[0])
        staged.metadata.append((metadata_file(role, md.signed.version), serialize(md)))
        staged.versions[role] = md.signed.version
    _finish(staged, copy.deepcopy(load(SNAPSHOT)), copy.deepcopy(load(TIMESTAMP)), signers, now, policy)
    return staged


__all__ = ["Signers", "Staged", "pending_file"]
