"""What deployers run: resolve, fetch, pin, lock check.

Kept free of pydantic, Typer and Rich (and of the targets, until `fetch` needs one): `bake
resolve` runs on every deploy and starts from here (see bake/entry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bake.app.session import Reader, RegistryAccess, Session
from bake.errors import BakeError, TrustError

if TYPE_CHECKING:
    from bake.deploy.lock import Finding
    from bake.deploy.resolve import Resolution
    from bake.registry import disks
    from bake.registry.backend import Registry
    from bake.registry.client import Snapshot


@dataclass(frozen=True)
class Resolved:
    registry: Registry
    resolution: Resolution
    snapshot: Snapshot


def resolve(
    session: Session, access: RegistryAccess, spec: str, target: str, lock: Path | None = None
) -> Resolution:
    """The resolution of ``spec`` once signature, freshness, revocation, the test gate and
    the artifact's bytes all check out (and, with a lock file, the metadata is no older
    than what its pins were made from)."""
    return verified(session, access, spec, target, lock).resolution


def verified(
    session: Session,
    access: RegistryAccess,
    spec: str,
    target: str,
    lock: Path | None = None,
    *,
    read: Reader | None = None,
    by_digest: bool = False,
) -> Resolved:
    """As :func:`resolve`, with the snapshot it was checked against. With ``by_digest``,
    ``spec`` names a published build by digest (``NAME@sha256:…``). A reader already open
    may be passed in."""
    from bake.deploy.resolve import find_by_digest
    from bake.deploy.resolve import resolve as resolve_spec
    from bake.deploy.verified import check_artifact, check_attestations, default_cache, localize

    read = read or session.reader(access)
    if lock is not None:
        _not_older_than(lock, read.registry.url, read.snapshot.versions.to_json())
    pick = find_by_digest if by_digest else resolve_spec
    res = localize(pick(read.snapshot, spec, target), read.registry.url)
    check_attestations(res, read.snapshot)
    check_artifact(res, default_cache(session.environ))
    return Resolved(read.registry, res, read.snapshot)


def _not_older_than(lock: Path, url: str, versions: dict[str, object]) -> None:
    from bake.deploy.lock import floor_of, older_metadata, read_lock

    older = older_metadata(versions, floor_of(read_lock(lock), url))
    if older:
        raise TrustError(
            f"rollback refused: {url} serves older metadata than {lock} was pinned from ({', '.join(older)})",
            "someone may be serving an old registry state to hide revocations",
        )


def render(resolution: Resolution, fmt: str) -> str:
    from bake.deploy.resolve import format_resolution

    return format_resolution(resolution, fmt)


@dataclass(frozen=True)
class Fetched:
    resolution: Resolution
    files: dict[str, disks.Fetched]  # by role
    usage: str | None

    def to_json(self) -> dict[str, object]:
        files = {r: {"path": str(f.path), "digest": f.digest, "size": f.size} for r, f in self.files.items()}
        return {"ok": True, **self.resolution.to_json(), "fetched": files, "boot": self.usage}


def fetch(session: Session, access: RegistryAccess, spec: str, target: str, out: Path) -> Fetched:
    """Download a file artifact (a VM's disk, kernel, initrd) after the checks `resolve`
    makes; each file's bytes are checked against its signed digest before it is put in
    place."""
    from bake import targets
    from bake.registry import disks

    plugin = targets.get(target)
    got = verified(session, access, spec, target)
    res = got.resolution
    if not res.files:
        raise BakeError(
            f"{res.name}@{res.version} ({target}) is not a file artifact: nothing to fetch",
            "containers are pulled by their ref: `bake resolve` prints it",
        )
    dests = plugin.file_names(out)
    fetched = {f.role: f for f in disks.fetch(got.registry.url, res.ref, res.files, dests)}
    return Fetched(res, fetched, plugin.usage({r: f.path for r, f in fetched.items()}))


@dataclass(frozen=True)
class Pinned:
    lock: Path
    resolution: Resolution

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "lock": str(self.lock), **self.resolution.to_json()}


def pin(session: Session, access: RegistryAccess, spec: str, target: str, lock: Path) -> Pinned:
    """Resolve and record the digest in a lock file."""
    from bake.deploy.lock import LockFile, read_lock, write_lock
    from bake.deploy.lock import pin as add_pin

    got = verified(session, access, spec, target)
    current = read_lock(lock) if lock.exists() else LockFile(pins=())
    write_lock(lock, add_pin(current, got.resolution, got.registry.url, session.now()))
    return Pinned(lock, got.resolution)


@dataclass(frozen=True)
class LockReport:
    lock: Path
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.errors,
            "findings": [
                {"kind": f.kind, "severity": f.severity, "name": f.pin.name, "message": f.message}
                for f in self.findings
            ],
        }


def lock_check(session: Session, access: RegistryAccess, lock: Path) -> LockReport:
    """Revoked, changed, missing and outdated pins."""
    from bake.deploy.lock import check_lock, read_lock

    snapshot = session.reader(access).snapshot
    return LockReport(lock, check_lock(read_lock(lock), snapshot))
