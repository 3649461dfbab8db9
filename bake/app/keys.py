"""Who signs what in a registry: set it up, show it, add, revoke and rotate keys, protect a
channel with its own keys and threshold, sign pending changes.

Root and targets keys may stay offline: each command that needs them takes them with
`--sign-with` (repeatable); the online key (`--key`, BAKE_SIGNING_KEY) signs the snapshot
and timestamp of every change. A change that lacks signatures waits as a pending change
that `bake sign` completes — from another machine, by another person, if need be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuf.api.metadata import Metadata, Root, Targets

from bake.app.session import RegistryAccess, Session
from bake.attest.keys import PublicKey, load_public_key
from bake.errors import BakeError, TrustError
from bake.infra.fsutil import write_file
from bake.registry import client
from bake.registry.backend import Registry
from bake.registry.client import Committed, PendingChange
from bake.registry.layout import ROOT, SNAPSHOT, TARGETS, TIMESTAMP, Policy, channel_role, metadata_file
from bake.registry.roles import AnyMetadata, protect_channel

EDITABLE_ROLES = (ROOT, TARGETS)  # the online key (snapshot, timestamp, images) is set at `keys init`


@dataclass(frozen=True)
class KeysResult:
    serial: int
    summary: str
    pending: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "serial": self.serial, "summary": self.summary, "pending": list(self.pending)}


def _result(done: Committed, summary: str) -> KeysResult:
    if done.pending:
        summary += f" — pending: more signatures needed (bake sign {done.pending[0]})"
    return KeysResult(done.serial, summary, done.pending)


def init(
    session: Session,
    access: RegistryAccess,
    root_keys: Sequence[Path],
    threshold: int,
    *,
    required: Sequence[str] = ("provenance", "test-result"),
    timestamp_hours: float = 24.0,
) -> KeysResult:
    """Set up an empty registry: its root keys (k of n; they sign root and targets and may
    stay offline), the online key, and the policy."""
    w = session.writer(access)
    keys = [load_public_key(p) for p in root_keys] or [w.signers.online.public]
    policy = Policy(tuple(required), timestamp_hours)
    done = client.init(w.registry, w.signers, keys, threshold, policy, now=session.now())
    return KeysResult(done.serial, f"set up {w.registry.url}: {len(keys)} root key(s), threshold {threshold}")


@dataclass(frozen=True)
class RoleKeys:
    role: str
    keyids: tuple[str, ...]
    threshold: int
    expires: str

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "keyids": list(self.keyids),
            "threshold": self.threshold,
            "expires": self.expires,
        }


@dataclass(frozen=True)
class Shown:
    root_version: int
    roles: tuple[RoleKeys, ...]
    policy: Policy

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "root_version": self.root_version,
            "roles": [r.to_json() for r in self.roles],
            "policy": {
                "required_attestations": list(self.policy.required),
                "timestamp_hours": self.policy.timestamp_hours,
            },
        }


def show(session: Session, access: RegistryAccess, root_out: Path | None = None) -> Shown:
    """The registry's roles, keys and thresholds as the TUF client verified them; with
    ``root_out``, its current root metadata, to hand to deployers (`--trust root.json`)."""
    w = session.writer(access)
    with client.writing(w.registry, w.trust, w.signers, session.now()) as state:
        root = state.load(ROOT)
        targets = state.load(TARGETS).signed
        assert isinstance(root.signed, Root) and isinstance(targets, Targets)
        rows = [
            RoleKeys(r, tuple(root.signed.roles[r].keyids), root.signed.roles[r].threshold, "")
            for r in (ROOT, TARGETS, SNAPSHOT, TIMESTAMP)
        ]
        assert targets.delegations is not None
        for name, role in (targets.delegations.roles or {}).items():
            rows.append(RoleKeys(name, tuple(role.keyids), role.threshold, ""))
        if root_out is not None:
            write_file(root_out, _signed_root(w.registry, root))
        return Shown(root.signed.version, tuple(rows), state.policy)


def _signed_root(registry: Registry, trusted: AnyMetadata) -> bytes:
    """The stored bytes of the root version the client trusts, signatures included (the
    client keeps the verified content only): what a deployer's `--trust root.json` needs."""
    stored = registry.read_metadata(metadata_file(ROOT, trusted.signed.version))
    if stored is None or Metadata.from_bytes(stored).signed != trusted.signed:
        raise TrustError(
            f"{registry.url} no longer holds root version {trusted.signed.version} as it was verified",
            "the registry changed meanwhile or was tampered with; run the command again",
        )
    return stored


def _root_edit(
    role: str, add: Sequence[PublicKey], remove: Sequence[str], threshold: int | None
) -> Callable[[Root], None]:
    if role not in EDITABLE_ROLES:
        raise BakeError(
            f"bake keys changes the keys of {', '.join(EDITABLE_ROLES)} or a channel, not {role!r}",
            exit_code=2,
        )

    def edit(root: Root) -> None:
        for key in add:
            root.add_key(key.key, role)
        for keyid in remove:
            if keyid not in root.roles[role].keyids:
                raise BakeError(
                    f"{keyid[:16]} is not a key of {role}",
                    f"its keys: {', '.join(k[:16] for k in root.roles[role].keyids)}",
                )
            root.revoke_key(keyid, role)
        if threshold is not None:
            root.roles[role].threshold = threshold
        if root.roles[role].threshold > len(root.roles[role].keyids):
            raise BakeError(
                f"{role} would need {root.roles[role].threshold} signatures "
                f"but has {len(root.roles[role].keyids)} keys",
                "add keys, or lower the threshold with --threshold",
                exit_code=2,
            )

    return edit


def change(
    session: Session,
    access: RegistryAccess,
    role: str,
    *,
    add: Sequence[Path] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
) -> KeysResult:
    """Add and revoke keys of root or targets, or set a threshold: a new root version,
    signed by a threshold of the old root keys and of the new ones (as TUF requires)."""
    w = session.writer(access)
    keys = [load_public_key(p) for p in add]
    edit = _root_edit(role, keys, remove, threshold)
    done = client.change_root(w.registry, w.trust, w.signers, edit, now=session.now())
    what = ", ".join([*(f"+{k.keyid[:16]}" for k in keys), *(f"-{k[:16]}" for k in remove)]) or "threshold"
    return _result(done, f"{role}: {what}")


def protect(
    session: Session, access: RegistryAccess, channel: str, keys: Sequence[Path], threshold: int
) -> KeysResult:
    """Give a channel its own keys: moving it then takes ``threshold`` of them."""
    w = session.writer(access)
    pubs = [load_public_key(p) for p in keys]
    done = client.change_delegations(
        w.registry, w.trust, w.signers, protect_channel(channel, pubs, threshold), now=session.now()
    )
    return _result(
        done, f"channel {channel}: moves need {threshold} of {len(pubs)} keys ({channel_role(channel)})"
    )


def sign(session: Session, access: RegistryAccess, role: str) -> KeysResult:
    w = session.writer(access)
    done = client.sign(w.registry, w.trust, w.signers, role, now=session.now())
    return _result(done, f"{role}: signed" + ("" if done.pending else " and published"))


def pending(session: Session, access: RegistryAccess) -> list[PendingChange]:
    w = session.writer(access)
    return client.pending(w.registry, w.trust, w.signers, now=session.now())


def drop(session: Session, access: RegistryAccess, role: str) -> None:
    w = session.writer(access)
    client.drop_pending(w.registry, w.trust, w.signers, role, now=session.now())
