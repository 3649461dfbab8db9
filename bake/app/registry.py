"""Changing and listing a registry: keys, publish, promote, rollback, revoke, refresh, ls,
history, outdated.

Each change is a pure planner (bake.deploy.changes) applied by the registry client under
the registry lock and signed; these use cases only gather what the planner needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bake.app.publish import PublishResult, publish_records
from bake.app.session import RegistryAccess, Session, Writer
from bake.deploy import changes
from bake.deploy.outdated import Outdated, find_outdated
from bake.errors import BakeError
from bake.record import load
from bake.registry import client
from bake.registry.client import Snapshot
from bake.registry.model import Change


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    keyid: str

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "private": str(self.private), "public": str(self.public), "keyid": self.keyid}


def keygen(session: Session, out: Path, *, force: bool = False, kind: str = "ed25519") -> KeyPair:
    """A key pair, ed25519 or ECDSA P-256 (private key 0600; passphrase from
    BAKE_KEY_PASSPHRASE)."""
    from bake.attest.keys import load_public_key, write_keypair
    from bake.registry.trust import new_key_passphrase

    secret = new_key_passphrase(session.environ)
    out.parent.mkdir(parents=True, exist_ok=True)
    private, public = write_keypair(out, secret, force=force, kind=kind)
    return KeyPair(private, public, load_public_key(public).keyid)


def publish(session: Session, records: Sequence[Path], access: RegistryAccess) -> list[PublishResult]:
    """Publish build records written by `bake build` (parents first)."""
    return publish_records(session, [load(p) for p in records], access)


@dataclass(frozen=True)
class Changed:
    serial: int
    summary: tuple[str, ...]
    pending: tuple[str, ...] = ()  # roles whose new version waits for more signatures
    warnings: tuple[str, ...] = ()  # the change is in the registry; something local is not

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "serial": self.serial,
            "changes": list(self.summary),
            "pending": list(self.pending),
            "warnings": list(self.warnings),
        }


def remember(w: Writer) -> tuple[Snapshot | None, tuple[str, ...]]:
    """After a commit, this machine's trust state takes the registry's new state (a replay
    of older metadata is then refused here). The registry's result is what counts: when the
    local state cannot be written (a full disk), that is a warning, and the command that
    changed the registry still succeeds — a retry would apply the change twice."""
    try:
        return client.read(w.registry, w.trust), ()
    except (OSError, BakeError) as e:
        why = e.message if isinstance(e, BakeError) else (e.strerror or str(e))
        return None, (f"warning: the registry has the change, but this machine did not record it: {why}",)


def _apply(session: Session, access: RegistryAccess, plan: Callable[[Snapshot], Change]) -> Changed:
    w = session.writer(access)
    committed, change = client.apply(w.registry, w.trust, w.signers, plan, now=session.now())
    summary = tuple(change.summary)
    if committed.pending:
        summary = tuple(
            f"pending (needs more signatures: bake sign {r}): {s}" for r in committed.pending for s in summary
        )
    _, warnings = remember(w) if change.docs else (None, ())
    return Changed(committed.serial, summary, committed.pending, warnings)


def promote(session: Session, access: RegistryAccess, spec: str, channel: str) -> Changed:
    """Point a channel at what `spec` selects (history is kept for rollback)."""
    at = session.now()
    return _apply(session, access, lambda snap: changes.plan_promote(snap, spec, channel, at=at))


def rollback(
    session: Session, access: RegistryAccess, name: str, channel: str, expect: str | None = None
) -> Changed:
    """Move a channel back to its previous known-good version. With ``expect`` (the version
    the caller saw as the head) it is idempotent: a retry after a rollback from ``expect``
    changes nothing, and a channel someone else moved meanwhile is left alone."""
    at = session.now()
    return _apply(
        session, access, lambda snap: changes.plan_rollback(snap, name, channel, at=at, expect=expect)
    )


def revoke(session: Session, access: RegistryAccess, spec: str, reason: str, *, cascade: bool) -> Changed:
    at = session.now()
    return _apply(
        session,
        access,
        lambda snap: changes.plan_revoke(snap, spec, reason, at=at, cascade_children=cascade),
    )


@dataclass(frozen=True)
class Refreshed:
    serial: int
    expires: str | None  # None: not read back (see warnings)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "serial": self.serial, "expires": self.expires, "warnings": list(self.warnings)}


def refresh(session: Session, access: RegistryAccess) -> Refreshed:
    """Sign new timestamp and snapshot versions (and online roles close to expiry): run it from CI
    well within the timestamp's lifetime, so clients never see the registry frozen."""
    w = session.writer(access)
    done = client.refresh(w.registry, w.trust, w.signers, now=session.now())
    snap, warnings = remember(w)
    return Refreshed(done.serial, snap.expires if snap else None, warnings)


@dataclass(frozen=True)
class ImageRow:
    name: str
    versions: tuple[str, ...]
    channels: dict[str, str]
    revoked: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "channels": dict(self.channels),
            "revoked": list(self.revoked),
        }


@dataclass(frozen=True)
class Listing:
    serial: int
    expires: str
    images: tuple[ImageRow, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "serial": self.serial,
            "expires": self.expires,
            "images": [r.to_json() for r in self.images],
        }


def list_images(session: Session, access: RegistryAccess) -> Listing:
    snap = session.reader(access).snapshot
    rows = []
    for name in snap.names():
        doc = snap.image(name)
        rows.append(
            ImageRow(
                name=name,
                versions=tuple(sorted(doc.versions)),
                channels={c: ch.current for c, ch in sorted(doc.channels.items())},
                revoked=tuple(sorted(doc.revocations)),
            )
        )
    return Listing(snap.serial, snap.expires, tuple(rows))


@dataclass(frozen=True)
class History:
    name: str
    versions: tuple[dict[str, str | None], ...]
    channels: dict[str, list[dict[str, str]]]

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "name": self.name, "versions": list(self.versions), "channels": self.channels}


def history(session: Session, access: RegistryAccess, name: str) -> History:
    """Versions, channel moves and revocations of one image."""
    doc = session.reader(access).snapshot.image(name)
    versions = tuple(
        {
            "version": v,
            "created": b.created,
            "bake_key": b.bake_key,
            "parent": b.parent,
            "revoked": doc.revocations[v].reason if v in doc.revocations else None,
        }
        for v, b in sorted(doc.versions.items(), key=lambda kv: kv[1].created)
    )
    channels = {
        c: [{"version": e.version, "at": e.at, "action": e.action} for e in ch.history]
        for c, ch in sorted(doc.channels.items())
    }
    return History(name, versions, channels)


def outdated(session: Session, access: RegistryAccess) -> list[Outdated]:
    """Channel heads built on a parent that has a newer version since."""
    return find_outdated(session.reader(access).snapshot)
