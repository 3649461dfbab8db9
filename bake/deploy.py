"""What deployers do with a verified registry snapshot: resolve, render, pin, check, and
plan promote / rollback / revoke.

Everything but :func:`read_lock` and :func:`write_lock` is pure: a :class:`Snapshot` (already
verified by :func:`bake.registry.client.read`) and a clock value come in, typed results go
out. Planners return a :class:`~bake.registry.model.Change` for
:func:`bake.registry.client.apply` to commit under the registry lock.

Spec syntax and selector precedence: see :mod:`bake.registry.model`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bake.digest import is_digest
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import semver
from bake.registry.client import Snapshot
from bake.registry.dirstore import atomic_write
from bake.registry.model import (
    Change,
    cascade,
    did_you_mean,
    format_time,
    image_ref,
    is_revoked,
    promote,
    revoke,
    rollback,
    select,
    split_spec,
)

FORMATS = ("text", "json", "env", "tfvars")
LOCK_FILE = "bake.lock"
LOCK_SCHEMA = "bake.lock/v1"
_USAGE = 2


# --------------------------------------------------------------------------- resolve


@dataclass(frozen=True)
class Resolution:
    """A spec resolved against a verified snapshot, for one target."""

    name: str
    spec: str
    version: str  # full version, e.g. "1.4.0+2"
    channel: str | None
    target: str
    digest: str
    ref: str | None  # "REPO@sha256:…" when the target was pushed somewhere
    artifact_id: str | None
    image_id: str | None
    bake_key: str
    attestations: Mapping[str, str] = field(default_factory=dict)
    registry: str = ""
    serial: int = 0  # the index serial it was resolved against
    files: Mapping[str, str] = field(default_factory=dict)  # role -> digest (a VM's disk, kernel, …)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "version": self.version,
            "channel": self.channel,
            "target": self.target,
            "digest": self.digest,
            "ref": self.ref,
            "artifact_id": self.artifact_id,
            "image_id": self.image_id,
            "bake_key": self.bake_key,
            "attestations": dict(self.attestations),
            "registry": self.registry,
            "serial": self.serial,
            **({"files": dict(self.files)} if self.files else {}),
        }


def _check_ref(ref: str, where: str) -> None:
    _, at, digest = ref.rpartition("@")
    if not at or not is_digest(digest):
        raise TrustError(
            f"{where} has the ref {ref!r}, which is not pinned by digest",
            "a tag can be moved to other bytes; republish the image with a REPO@sha256:… ref",
        )


def resolve(snapshot: Snapshot, spec: str, target: str) -> Resolution:
    """``NAME@VERSION|CHANNEL|latest`` + target -> the verified build output to deploy.

    Refuses unknown names, versions, channels and targets (with a did-you-mean), revoked
    builds (saying why and when) and refs that name a tag without a digest.
    """
    name, selector = split_spec(spec)
    picked = select(snapshot.image(name), selector)
    where = image_ref(name, picked.version)
    output = picked.build.targets.get(target)
    if output is None:
        raise RegistryError(
            f"{where} was not built for target {target!r}",
            did_you_mean(target, picked.build.targets)
            or f"its targets: {', '.join(sorted(picked.build.targets))}",
        )
    if output.ref is not None:
        _check_ref(output.ref, f"{where} ({target})")
    return Resolution(
        name=name,
        spec=spec,
        version=picked.version,
        channel=picked.channel,
        target=target,
        digest=output.digest,
        ref=output.ref,
        artifact_id=output.artifact_id,
        image_id=output.image_id,
        bake_key=picked.build.bake_key,
        attestations=dict(picked.build.attestations),
        registry=snapshot.url,
        serial=snapshot.index.serial,
        files=dict(output.files),
    )


# --------------------------------------------------------------------------- formats


def _hcl_string(value: str | None) -> str:
    if value is None:
        return "null"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    # "${" and "%{" start HCL template sequences inside quoted strings.
    return '"' + escaped.replace("${", "$${").replace("%{", "%%{") + '"'


def format_resolution(res: Resolution, fmt: str) -> str:
    """Render for people (``text``), tools (``json``), shells and env files (``env``:
    ``BAKE_IMAGE_REF=…``) or Terraform (``tfvars``: ``image_ref``, ``image_digest``,
    ``artifact_id``). Ends with a newline."""
    if fmt == "json":
        return json.dumps(res.to_json(), indent=2, sort_keys=True) + "\n"
    if fmt == "env":
        pairs = {
            "BAKE_IMAGE_NAME": res.name,
            "BAKE_IMAGE_VERSION": res.version,
            "BAKE_IMAGE_TARGET": res.target,
            "BAKE_IMAGE_DIGEST": res.digest,
            "BAKE_IMAGE_REF": res.ref,
            "BAKE_ARTIFACT_ID": res.artifact_id,
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in pairs.items() if v is not None)
    if fmt == "tfvars":
        return (
            f"image_ref = {_hcl_string(res.ref)}\n"
            f"image_digest = {_hcl_string(res.digest)}\n"
            f"artifact_id = {_hcl_string(res.artifact_id)}\n"
        )
    if fmt == "text":
        rows = [
            ("image", image_ref(res.name, res.version)),
            ("channel", res.channel),
            ("target", res.target),
            ("digest", res.digest),
            ("ref", res.ref),
            ("artifact", res.artifact_id),
            *((f"{role}", digest) for role, digest in sorted(res.files.items())),
            ("bake key", res.bake_key),
            *((f"{kind}", digest) for kind, digest in sorted(res.attestations.items())),
            ("registry", f"{res.registry} (serial {res.serial})"),
        ]
        return "".join(f"{k + ':':<13} {v}\n" for k, v in rows if v is not None)
    raise BakeError(
        f"unknown output format {fmt!r}",
        did_you_mean(fmt, FORMATS) or f"formats: {', '.join(FORMATS)}",
        _USAGE,
    )


# --------------------------------------------------------------------------- planners


def plan_promote(snapshot: Snapshot, spec: str, channel: str, *, at: datetime) -> Change:
    """Point ``channel`` of NAME at what ``spec`` selects (a version, latest, a channel)."""
    name, selector = split_spec(spec)
    doc = snapshot.image(name)
    before = doc.channels.get(channel)
    updated = promote(doc, selector, channel, at=at)
    head = updated.channels[channel].current
    if updated is doc:
        return Change({}, (f"{image_ref(name, channel)} already points to {head}",))
    old = before.current if before else "(new channel)"
    return Change({name: updated}, (f"{image_ref(name, channel)}: {old} -> {head}",))


def plan_rollback(snapshot: Snapshot, name: str, channel: str, *, at: datetime) -> Change:
    doc = snapshot.image(name)
    updated = rollback(doc, channel, at=at)
    old, new = doc.channels[channel].current, updated.channels[channel].current
    return Change({name: updated}, (f"{image_ref(name, channel)}: {old} -> {new} (rollback)",))


def plan_revoke(
    snapshot: Snapshot,
    spec: str,
    reason: str,
    *,
    at: datetime,
    cascade_children: bool = True,
) -> Change:
    """Revoke ``NAME@1.4.0+2`` (one build) or ``NAME@1.4.0`` (all its builds) and, unless
    ``cascade_children`` is off, every build made from a revoked one, transitively."""
    name, version = split_spec(spec)
    if not semver.is_version(version):
        raise BakeError(
            f"revoke needs a version, not {version!r}",
            f"name the build: {name}@1.4.0+2 (or {name}@1.4.0 for all its builds)",
            _USAGE,
        )
    doc = snapshot.image(name)
    updated = revoke(doc, version, reason, at=at)
    parsed = semver.parse(version)
    matched = [
        v
        for v, b in updated.versions.items()
        if v == version or (not parsed.build and b.version == parsed.core)
    ]
    docs = {name: updated}
    lines = [
        f"revoked {image_ref(name, v)}: {updated.revocations[v].reason}"
        for v in sorted(updated.revocations)
        if v not in doc.revocations
    ]
    if cascade_children:
        everything = {**snapshot.images(), name: updated}
        children, affected = cascade(everything, [image_ref(name, v) for v in matched], at=at)
        docs.update(children)
        lines += [f"revoked {ref} (built from a revoked image)" for ref in affected]
    for doc_name, changed in docs.items():
        lines += [
            f"warning: {image_ref(doc_name, ch)} now points to revoked {c.current}; "
            f"roll it back: bake rollback {doc_name} {ch}"
            for ch, c in sorted(changed.channels.items())
            if is_revoked(changed, c.current)
        ]
    changed_docs = {n: d for n, d in docs.items() if d is not snapshot.get(n)}
    return Change(changed_docs, tuple(lines) or (f"{spec} was already revoked",))


# --------------------------------------------------------------------------- lock file


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
    )
    others = [p for p in lockdata.pins if (p.name, p.target) != (new.name, new.target)]
    return replace(lockdata, pins=tuple(sorted([*others, new], key=lambda p: (p.name, p.target))))


FindingKind = Literal["missing", "changed", "revoked", "outdated", "unresolvable"]


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    severity: Literal["error", "warning"]
    pin: Pin
    message: str


def _check_pin(p: Pin, snapshot: Snapshot) -> list[Finding]:
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
        found.append(Finding("revoked", "error", p, f"{where} was revoked at {r.at}: {r.reason}"))
    try:
        now = resolve(snapshot, p.spec, p.target)
    except BakeError as e:
        found.append(Finding("unresolvable", "warning", p, f"{p.spec} ({p.target}): {e}"))
        return found
    if now.version != p.version:
        message = f"{p.spec} now resolves to {now.version}, pinned {p.version}"
        found.append(Finding("outdated", "warning", p, message))
    return found


def check_lock(lockdata: LockFile, snapshot: Snapshot) -> list[Finding]:
    """Check the pins of ``snapshot``'s registry (pins of other registries are skipped):
    missing, digest changed, revoked, outdated (the spec resolves elsewhere now)."""
    return [f for p in lockdata.pins if p.registry == snapshot.url for f in _check_pin(p, snapshot)]


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
        pins.append(Pin(ref=ref, **{k: raw[k] for k in _PIN_FIELDS}))
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
    atomic_write(path, text.encode("utf-8"))
