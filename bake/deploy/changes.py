"""Plan promote / rollback / revoke: pure functions from a verified snapshot to a change.

Planners return a :class:`~bake.registry.model.Change` for :func:`bake.registry.client.apply`
to commit under the registry lock; a clock value comes in, nothing here reads one.
"""

from __future__ import annotations

from datetime import datetime

from bake.errors import BakeError, RegistryError
from bake.registry import semver
from bake.registry.client import Snapshot
from bake.registry.model import Change, cascade, image_ref, is_revoked, promote, revoke, rollback, split_spec
from bake.textsafe import one_line

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


def plan_rollback(
    snapshot: Snapshot, name: str, channel: str, *, at: datetime, expect: str | None = None
) -> Change:
    """Roll ``channel`` back one step. With ``expect``: only from that head; when the last
    move of the channel was a rollback away from ``expect``, the retry is a no-op."""
    doc = snapshot.image(name)
    found = doc.channels.get(channel)
    if expect is not None and found is not None and found.current != expect:
        history = found.history
        if len(history) >= 2 and history[-1].action == "rollback" and history[-2].version == expect:
            return Change(
                {}, (f"{image_ref(name, channel)} was already rolled back from {expect} to {found.current}",)
            )
        raise RegistryError(
            f"{image_ref(name, channel)} points to {found.current}, not {expect}: nothing was rolled back",
            f"someone moved it meanwhile; see `bake history {name}`, then roll back with --expect "
            f"{found.current} if that is still what you want",
        )
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
        f"revoked {image_ref(name, v)}: {one_line(updated.revocations[v].reason)}"
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
