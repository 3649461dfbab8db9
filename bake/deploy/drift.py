"""Drift: is a running instance still, file for file, the image it was baked from?

`compare` holds the manifest in a dict and streams the live entries past it once: each
live path is looked up and taken out, what is left at the end was removed. Memory beyond
the manifest grows with the number of differences only. Volatile paths are ignored on
both sides. The report groups what differs (added, removed, changed by aspect) and
renders as text to read at a glance or as JSON.

`check_drift` is the one edge here: it opens the live stream (``docker export`` or one
``ssh``) through an injected streamer and runs `compare` over it; or, for a container of
the manifest's own image, reads only its writable layer and runs `compare_changes`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bake.attest.filemanifest import Entry, Streamer, entry_to_json, is_volatile, volatile_set
from bake.deploy.instances import LayerChanges, layer_changes, live_entries, parse_instance
from bake.errors import BakeError
from bake.infra import process
from bake.infra.process import Runner
from bake.targets.docker.engine import Engine

Aspect = Literal["type", "content", "target", "owner", "mode"]
# Most telling first: a change is listed under its first aspect.
ASPECTS: tuple[Aspect, ...] = ("type", "content", "target", "owner", "mode")
_TITLES: dict[Aspect, str] = {
    "type": "type changed",
    "content": "content changed",
    "target": "link target changed",
    "owner": "owner changed",
    "mode": "mode changed",
}


@dataclass(frozen=True, slots=True)
class Change:
    """A path on both sides that differs in *aspects* (in ASPECTS order)."""

    before: Entry
    after: Entry
    aspects: tuple[Aspect, ...]

    @property
    def path(self) -> str:
        return self.after.path


@dataclass(frozen=True)
class DriftReport:
    """What differs between a manifest and a live instance, each group sorted by path."""

    instance: str
    added: tuple[Entry, ...]
    removed: tuple[Entry, ...]
    changed: tuple[Change, ...]
    compared: int  # live paths looked at (volatile ones not counted)
    volatile: tuple[str, ...]
    image: str | None = None  # the manifest's image digest, when the caller knows it
    method: str = "stream"  # "stream": every live path read; "layer": the writable layer only

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def changed_by(self, aspect: Aspect) -> tuple[Change, ...]:
        """Changes whose first (most telling) aspect is *aspect*."""
        return tuple(c for c in self.changed if c.aspects[0] == aspect)

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "instance": self.instance,
            "image": self.image,
            "method": self.method,
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "changed": len(self.changed),
                "compared": self.compared,
                **{f"changed_{a}": sum(a in c.aspects for c in self.changed) for a in ASPECTS},
            },
            "added": [entry_to_json(e) for e in self.added],
            "removed": [entry_to_json(e) for e in self.removed],
            "changed": [
                {
                    **_path_json(c.after),
                    "aspects": list(c.aspects),
                    "before": entry_to_json(c.before),
                    "after": entry_to_json(c.after),
                }
                for c in self.changed
            ],
            "volatile": list(self.volatile),
        }


def differences(before: Entry, after: Entry) -> tuple[Aspect, ...]:
    """How *after* differs from *before* (same path). A type change says it all."""
    if before.kind != after.kind:
        return ("type",)
    found: list[Aspect] = []
    if before.kind == "file" and (before.sha256 != after.sha256 or before.sha256 is None):
        found.append("content")  # an unknown digest (unreadable, dangling hard link) is no match
    if before.target != after.target:
        found.append("target")
    if (before.uid, before.gid) != (after.uid, after.gid):
        found.append("owner")
    if before.mode != after.mode:
        found.append("mode")
    return tuple(found)


def compare(
    manifest: Iterable[Entry],
    live: Iterable[Entry],
    volatile: frozenset[str],
    *,
    instance: str = "",
    image: str | None = None,
) -> DriftReport:
    """Compare *live* (streamed once) against *manifest*, ignoring *volatile* paths."""
    remaining = {e.path: e for e in manifest if not is_volatile(e.path, volatile)}
    added: list[Entry] = []
    changed: list[Change] = []
    compared = 0
    for entry in live:
        if is_volatile(entry.path, volatile):
            continue
        compared += 1
        before = remaining.pop(entry.path, None)
        if before is None:
            added.append(entry)
        elif aspects := differences(before, entry):
            changed.append(Change(before, entry, aspects))
    return DriftReport(
        instance=instance,
        added=tuple(sorted(added, key=_by_path)),
        removed=tuple(sorted(remaining.values(), key=_by_path)),
        changed=tuple(sorted(changed, key=lambda c: _by_path(c.after))),
        compared=compared,
        volatile=tuple(sorted(volatile)),
        image=image,
    )


def compare_changes(
    manifest: Iterable[Entry],
    changes: LayerChanges,
    volatile: frozenset[str],
    *,
    instance: str = "",
    image: str | None = None,
) -> DriftReport:
    """Compare a container's writable layer with the manifest of the image it runs: every
    other path is the image's own (its layers are content-addressed), so only the paths
    the layer added, changed or deleted can differ. A deleted folder takes its subtree."""
    remaining = {e.path: e for e in manifest if not is_volatile(e.path, volatile)}
    added: list[Entry] = []
    changed: list[Change] = []
    for entry in changes.entries:
        if is_volatile(entry.path, volatile):
            continue
        before = remaining.get(entry.path)
        if before is None:
            added.append(entry)
        elif aspects := differences(before, entry):
            changed.append(Change(before, entry, aspects))
    gone = frozenset(changes.deleted)
    removed = [e for e in remaining.values() if is_volatile(e.path, gone)]
    return DriftReport(
        instance=instance,
        added=tuple(sorted(added, key=_by_path)),
        removed=tuple(sorted(removed, key=_by_path)),
        changed=tuple(sorted(changed, key=lambda c: _by_path(c.after))),
        compared=len(remaining) - len(removed) + len(added),
        volatile=tuple(sorted(volatile)),
        image=image,
        method="layer",
    )


def check_drift(
    runner: Runner,
    engine: Engine | None,
    manifest_entries: Iterable[Entry],
    host_url: str,
    volatile: Sequence[str] = (),
    *,
    image_digest: str | None = None,
    streamer: Streamer = process.stream,
    environ: Mapping[str, str] | None = None,
    ssh_config: Path | None = None,
    image_id: str | None = None,
    full: bool = False,
) -> DriftReport:
    """Collect the live state of *host_url* and compare it with the manifest.

    *volatile* adds to the default volatile paths: pass the manifest's own (what was
    ignored when it was recorded) plus any the recipe has added since. For docker://
    the container is looked up first, so a wrong name fails with Docker's own message;
    when it runs *image_id* (the image the manifest is of) only its writable layer is
    read, unless *full* asks for every path (which also catches an engine whose own
    image store was changed under it).
    """
    instance = parse_instance(host_url)
    vol = volatile_set(volatile)
    if instance.scheme == "docker":
        if engine is None:
            raise BakeError(f"checking {host_url} needs a Docker engine")
        fmt = ("--format", "{{.Image}}")
        running = runner(engine.call("container", "inspect", *fmt, "--", instance.host)).stdout.strip()
        if not full and image_id is not None and running == image_id:
            changes = layer_changes(engine, instance.host, vol)
            if changes is not None:
                return compare_changes(manifest_entries, changes, vol, instance=host_url, image=image_digest)
    env = os.environ if environ is None else environ
    with live_entries(engine, instance, vol, streamer=streamer, environ=env, ssh_config=ssh_config) as live:
        return compare(manifest_entries, live, vol, instance=host_url, image=image_digest)


# --- rendering ---------------------------------------------------------------------------


def render_text(report: DriftReport, *, limit: int = 25) -> str:
    """The report for people: a verdict line, then each group, at most *limit* lines each.

    An added or removed folder stands for everything below it ("+ 41 inside").
    """
    about = f"{report.instance}" + (f" vs {report.image}" if report.image else "")
    if report.clean:
        return f"no drift: {about} matches its manifest ({report.compared:,} paths compared)\n"
    counts = f"{len(report.added)} added, {len(report.removed)} removed, {len(report.changed)} changed"
    lines = [f"DRIFT: {about}: {counts} ({report.compared:,} paths compared)"]
    for aspect in ASPECTS:
        group = report.changed_by(aspect)
        if group:
            lines.append(f"\n{_TITLES[aspect]} ({len(group)})")
            lines += _limited([_change_line(c) for c in group], limit)
    for title, sign, entries in (("added", "+", report.added), ("removed", "-", report.removed)):
        if entries:
            lines.append(f"\n{title} ({len(entries)}: {_kinds(entries)})")
            lines += _limited([f"  {sign} {text}" for text in _folded(entries)], limit)
    return "\n".join(lines) + "\n"


def _change_line(c: Change) -> str:
    details = []
    for aspect in c.aspects:
        b, a = c.before, c.after
        if aspect == "type":
            details.append(f"{b.kind} → {a.kind}")
        elif aspect == "content":
            details.append(f"sha256 {_short(b.sha256)} → {_short(a.sha256)}")
        elif aspect == "target":
            details.append(f"target {_show(b.target or '')} → {_show(a.target or '')}")
        elif aspect == "owner":
            details.append(f"owner {b.uid}:{b.gid} → {a.uid}:{a.gid}")
        else:
            details.append(f"mode {b.mode:04o} → {a.mode:04o}")
    return f"  ~ {_show(c.path)}  ({'; '.join(details)})"


def _folded(entries: Sequence[Entry]) -> list[str]:
    """One line per entry, except below a listed folder, which counts what it holds."""
    out: list[str] = []
    folder: str | None = None
    inside = 0
    for e in entries:  # in tree order: what a folder holds comes right after it
        if folder is not None and e.path.startswith(folder + "/"):
            inside += 1
            continue
        if folder is not None:
            out[-1] += f"  (+ {inside} inside)" if inside else ""
        folder, inside = (e.path, 0) if e.kind == "dir" else (None, 0)
        out.append(_show(e.path) + ("/" if e.kind == "dir" else _suffix(e)))
    if folder is not None and inside:
        out[-1] += f"  (+ {inside} inside)"
    return out


def _suffix(e: Entry) -> str:
    if e.kind == "symlink":
        return f" → {_show(e.target or '')}"
    if e.kind == "other":
        return "  (device, fifo or socket)"
    return ""


def _kinds(entries: Sequence[Entry]) -> str:
    counts = {k: sum(e.kind == k for e in entries) for k in ("file", "dir", "symlink", "other")}
    names = {"file": "file", "dir": "folder", "symlink": "symlink", "other": "other"}
    return ", ".join(f"{n} {names[k]}{'s' if n > 1 and k != 'other' else ''}" for k, n in counts.items() if n)


def _limited(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"  … and {len(lines) - limit} more (the JSON report lists all)"]


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "unknown"


def _show(path: str) -> str:
    """*path* safe to print: control characters and undecodable bytes escaped, so a hostile
    file name can neither fake report lines nor send terminal escape sequences."""
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else _escape(c) for c in path)


def _escape(c: str) -> str:
    if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    return c.encode("unicode_escape").decode("ascii")


def _by_path(e: Entry) -> list[str]:
    # Tree order: a folder's contents follow it directly ("/a", "/a/x", "/a-b").
    return e.path.split("/")


def _path_json(e: Entry) -> dict[str, object]:
    j = entry_to_json(e)
    return {k: v for k, v in j.items() if k.startswith("path")}
