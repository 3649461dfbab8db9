"""Plan promote / rollback / revoke: pure functions from a verified snapshot to a change.

Planners return a :class:`~bake.registry.model.Change` for :func:`bake.registry.client.apply`
to commit under the registry lock; a clock value comes in, nothing here reads one.
"""

from __future__ import annotations

from datetime import datetime

from bake.errors import BakeError
from bake.registry import semver
from bake.registry.client import Snapshot
from bake.registry.model import Change, cascade, image_ref, is_revoked, promote, revoke, rollback, split_spec

_USAGE = 2


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
