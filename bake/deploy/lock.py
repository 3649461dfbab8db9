"""Lock files: the digests a deployment pins, and checking them against the registry.

Everything but :func:`read_lock` and :func:`write_lock` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bake.attest.digest import is_digest
from bake.deploy.resolve import Resolution, resolve
from bake.errors import BakeError
from bake.infra.fsutil import write_file
from bake.registry.client import Snapshot
from bake.registry.model import format_time, image_ref, is_revoked
from bake.textsafe import one_line

LOCK_FILE = "bake.lock"
LOCK_SCHEMA = "bake.lock/v2"
VERSION_FIELDS = ("root", "timestamp", "snapshot")
_USAGE = 2


@dataclass(frozen=True)
class Pin:
    name: str
    spec: str
    version: str
    target: str
    digest: str
    ref: str | None
    registry: str
    pinned_at: str
    # the TUF metadata versions the pin was made from: nothing older is accepted later,
    # on any machine, fresh ones included (a replayed registry state is refused)
    metadata: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LockFile:
    """The pins of a deployment: one per (image name, target), kept sorted.

    Stored as JSON, not TOML: the standard library can write JSON (``tomllib`` only
    reads), the registry already speaks it, and sorted keys with a fixed indent give
    stable, reviewable diffs.
    """

    pins: tuple[Pin, ...] = ()

    def find(self, name: str, target: str) -> Pin | None:
        return next((p for p in self.pins if (p.name, p.target) == (name, target)), None)


def pin(lockdata: LockFile, resolution: Resolution, registry_url: str, now: datetime) -> LockFile:
    """Add (or replace) the pin of ``resolution``'s image and target."""
    new = Pin(
        name=resolution.name,
        spec=resolution.spec,
        version=resolution.version,
        target=resolution.target,
        digest=resolution.digest,
        ref=resolution.ref,
        registry=registry_url,
        pinned_at=format_time(now),
        metadata={
            k: int(v) for k, v in resolution.versions.items() if k in VERSION_FIELDS and isinstance(v, int)
        },
    )
    others = [p for p in lockdata.pins if (p.name, p.target) != (new.name, new.target)]
    return replace(lockdata, pins=tuple(sorted([*others, new], key=lambda p: (p.name, p.target))))


Gate = Callable[[Resolution, Snapshot], object]  # raises BakeError when a build may not deploy
FindingKind = Literal[
    "missing", "changed", "revoked", "gate", "outdated", "unresolvable", "unchecked", "rollback"
]


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    severity: Literal["error", "warning"]
    pin: Pin
    message: str


def _check_pin(p: Pin, snapshot: Snapshot, gate: Gate) -> list[Finding]:
    where = f"{image_ref(p.name, p.version)} ({p.target})"
    doc = snapshot.get(p.name)
    build = doc.versions.get(p.version) if doc else None
    output = build.targets.get(p.target) if build else None
    if doc is None or output is None:
        return [Finding("missing", "error", p, f"{where} is not in {snapshot.url}")]
    found: list[Finding] = []
    if output.digest != p.digest:
        message = f"{where}: the registry says {output.digest}, the lock says {p.digest}"
        found.append(Finding("changed", "error", p, message))
    if is_revoked(doc, p.version):
        r = doc.revocations[p.version]
        found.append(Finding("revoked", "error", p, f"{where} was revoked at {r.at}: {one_line(r.reason)}"))
    else:
        found += _gate(p, snapshot, gate)
    try:
        now = resolve(snapshot, p.spec, p.target)
    except BakeError as e:
        found.append(Finding("unresolvable", "warning", p, f"{p.spec} ({p.target}): {e}"))
        return found
    if now.version != p.version:
        message = f"{p.spec} now resolves to {now.version}, pinned {p.version}"
        found.append(Finding("outdated", "warning", p, message))
    return found


def _gate(p: Pin, snapshot: Snapshot, gate: Gate) -> list[Finding]:
    """The registry's test gate, applied to the pinned build."""
    try:
        gate(resolve(snapshot, image_ref(p.name, p.version), p.target), snapshot)
    except BakeError as e:
        return [Finding("gate", "error", p, e.message)]
    return []


def older_metadata(versions: Mapping[str, object], floor: Mapping[str, int]) -> list[str]:
    """The metadata roles whose version in ``versions`` is below ``floor`` (a rollback)."""
    older = []
    for role in VERSION_FIELDS:
        seen, pinned = versions.get(role), floor.get(role)
        if isinstance(seen, int) and pinned is not None and seen < pinned:
            older.append(f"{role} {seen} < {pinned}")
    return older


def floor_of(lockdata: LockFile, registry_url: str) -> dict[str, int]:
    """The newest metadata versions any pin of ``registry_url`` was made from."""
    floor: dict[str, int] = {}
    for p in lockdata.pins:
        if p.registry == registry_url:
            for role, version in p.metadata.items():
                floor[role] = max(floor.get(role, 0), version)
    return floor


def check_lock(lockdata: LockFile, snapshot: Snapshot, gate: Gate | None = None) -> list[Finding]:
    """Check every pin against ``snapshot``: missing, digest changed, revoked, failing the
    registry's test gate (``gate``; by default bake.deploy.verified.check_attestations),
    outdated (the spec resolves elsewhere now); a pin of another registry, or one made from
    newer metadata than the registry serves now (a rollback), cannot be checked and is an
    error. No pin is ever skipped."""
    from bake.deploy.verified import check_attestations

    checked: Gate = gate or check_attestations
    found: list[Finding] = []
    for p in lockdata.pins:
        if p.registry != snapshot.url:
            message = f"{p.name} ({p.target}) was pinned from {p.registry}, not {snapshot.url}: "
            message += "it cannot be checked"
            found.append(Finding("unchecked", "error", p, message))
            continue
        older = older_metadata(snapshot.versions.to_json(), p.metadata)
        if older:
            message = (
                f"{p.name} ({p.target}) was pinned from newer metadata than {snapshot.url} serves now "
                f"({', '.join(older)}): an old registry state may be replayed to hide revocations"
            )
            found.append(Finding("rollback", "error", p, message))
            continue
        found += _check_pin(p, snapshot, checked)
    return found


def lock_to_json(lockdata: LockFile) -> dict[str, Any]:
    return {
        "schema": LOCK_SCHEMA,
        "pins": [
            {
                "name": p.name,
                "spec": p.spec,
                "version": p.version,
                "target": p.target,
                "digest": p.digest,
                "ref": p.ref,
                "registry": p.registry,
                "pinned_at": p.pinned_at,
                "metadata": dict(p.metadata),
            }
            for p in lockdata.pins
        ],
    }


_PIN_FIELDS = ("name", "spec", "version", "target", "digest", "registry", "pinned_at")


def lock_from_json(data: object, *, source: str) -> LockFile:
    def bad(path: str, expected: str) -> BakeError:
        return BakeError(
            f"{source}: {path} must be {expected}",
            f"fix or delete {source} and pin again",
            _USAGE,
        )

    if not isinstance(data, dict) or data.get("schema") != LOCK_SCHEMA:
        raise bad("schema", repr(LOCK_SCHEMA))
    raw_pins = data.get("pins")
    if not isinstance(raw_pins, list):
        raise bad("pins", "a list")
    pins = []
    for i, raw in enumerate(raw_pins):
        if not isinstance(raw, dict):
            raise bad(f"pins[{i}]", "an object")
        for key in _PIN_FIELDS:
            if not isinstance(raw.get(key), str):
                raise bad(f"pins[{i}].{key}", "a string")
        if not is_digest(raw["digest"]):
            raise bad(f"pins[{i}].digest", "sha256:<64 hex>")
        ref = raw.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise bad(f"pins[{i}].ref", "a string or null")
        metadata = raw.get("metadata", {})
        if not isinstance(metadata, dict) or not all(
            k in VERSION_FIELDS and isinstance(v, int) and not isinstance(v, bool)
            for k, v in metadata.items()
        ):
            raise bad(f"pins[{i}].metadata", "an object of root, timestamp and snapshot versions")
        pins.append(Pin(ref=ref, metadata=metadata, **{k: raw[k] for k in _PIN_FIELDS}))
    return LockFile(tuple(pins))


def read_lock(path: Path) -> LockFile:
    """The lock file at ``path``; an empty one if it does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LockFile()
    except OSError as e:
        raise BakeError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BakeError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})",
            f"fix or delete {path} and pin again",
            _USAGE,
        ) from None
    return lock_from_json(data, source=str(path))


def write_lock(path: Path, lockdata: LockFile) -> None:
    """Write the lock file atomically (readers never see half of it)."""
    text = json.dumps(lock_to_json(lockdata), indent=2, sort_keys=True) + "\n"
    write_file(path, text.encode("utf-8"))
