"""The pictures of an image page, as geometry for the SVG templates (pure).

- The **lineage graph**: the image in the middle, the images it is built on to its left
  (parent, grandparent …, as the builds' ``parent`` fields say) and the images built on
  it to its right, each a link to its page. Wide fan-outs are cut at ``MAX_CHILDREN`` with
  a "+N more" node, so the picture stays readable at 1,000 images.
- The **channel timeline**: one row per channel, a mark per promote or rollback in time
  order, the version it pointed at, and the head's periods as bars.

Labels are plain text; the templates escape them like any other value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bake.errors import BakeError
from bake.registry.model import ImageDoc, parse_time

MAX_CHILDREN = 12
MAX_DEPTH = 6  # ancestors drawn
MAX_MARKS = 40  # channel moves drawn per channel (the table lists them all)
NODE_W, NODE_H, COL_W, ROW_H, PAD = 180, 30, 240, 44, 16


@dataclass(frozen=True)
class Node:
    x: int
    y: int
    label: str
    title: str
    name: str | None  # the image it links to (None: a "+N more" node)
    current: bool = False


@dataclass(frozen=True)
class Edge:
    d: str  # an SVG path


@dataclass(frozen=True)
class Graph:
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    node_w: int = NODE_W
    node_h: int = NODE_H


def parents_of(doc: ImageDoc) -> list[str]:
    """The images ``doc``'s builds are built on, most used first."""
    counts: dict[str, int] = {}
    for build in doc.versions.values():
        if build.parent:
            name = build.parent.rpartition("@")[0]
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))


def children_index(parents: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Image name → the images built on it, from each image's parents."""
    out: dict[str, list[str]] = {}
    for child, ps in sorted(parents.items()):
        for p in ps:
            out.setdefault(p, []).append(child)
    return out


def _label(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def lineage(name: str, parents: Mapping[str, Sequence[str]], children: Mapping[str, Sequence[str]]) -> Graph:
    """Columns: ancestors (oldest left) → the image → its children."""
    columns: list[list[str]] = []
    seen = {name}
    layer = [name]
    for _ in range(MAX_DEPTH):
        layer = [p for n in layer for p in parents.get(n, ()) if p not in seen]
        layer = list(dict.fromkeys(layer))
        if not layer:
            break
        seen.update(layer)
        columns.insert(0, layer)
    columns.append([name])
    kids = [c for c in children.get(name, ()) if c != name]
    if kids:
        columns.append(
            kids[:MAX_CHILDREN] + ([f"+{len(kids) - MAX_CHILDREN} more"] if len(kids) > MAX_CHILDREN else [])
        )
    rows = max(len(c) for c in columns)
    height = PAD * 2 + rows * ROW_H - (ROW_H - NODE_H)
    width = PAD * 2 + len(columns) * COL_W - (COL_W - NODE_W)
    place: dict[str, tuple[int, int]] = {}
    nodes = []
    for col, members in enumerate(columns):
        top = PAD + (rows - len(members)) * ROW_H // 2
        for row, member in enumerate(members):
            x, y = PAD + col * COL_W, top + row * ROW_H
            more = member.startswith("+")
            nodes.append(Node(x, y, _label(member), member, None if more else member, member == name))
            place.setdefault(member, (x, y))
    edges = []
    for left, right in itertools.pairwise(columns):
        for a in left:
            for b in right:
                linked = b.startswith("+") and a == name
                if not (linked or a in parents.get(b, ()) or b in children.get(a, ())):
                    continue
                (x1, y1), (x2, y2) = place[a], place[b]
                x1, y1, y2 = x1 + NODE_W, y1 + NODE_H // 2, y2 + NODE_H // 2
                mid = (x1 + x2) // 2
                edges.append(Edge(f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"))
    return Graph(width, height, tuple(nodes), tuple(edges))


@dataclass(frozen=True)
class Mark:
    x: int
    version: str
    action: str
    at: str
    above: bool  # label above or below the line (alternating, to keep labels apart)


@dataclass(frozen=True)
class Bar:
    x: int
    width: int
    version: str


@dataclass(frozen=True)
class Row:
    channel: str
    y: int
    marks: tuple[Mark, ...]
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    rows: tuple[Row, ...]
    start: str
    end: str
    left: int = 110  # room for channel names
    right: int = 60


TIMELINE_W, TIMELINE_ROW = 900, 64


def _when(text: str) -> datetime | None:
    try:
        return parse_time(text)
    except BakeError:  # a time that is not RFC 3339 is not drawn (the table still lists it)
        return None


def timeline(doc: ImageDoc) -> Timeline | None:
    """Every channel's moves on one axis (None when the image has no channel). Moves are
    placed in time order, evenly spaced (moves minutes apart and weeks apart stay
    readable alike); moves at the same instant share a place. Each mark's time is in its
    tooltip, and the history table lists them all."""
    moves = {
        c: [(t, e.version, e.action, e.at) for e in ch.history[-MAX_MARKS:] if (t := _when(e.at)) is not None]
        for c, ch in sorted(doc.channels.items())
    }
    instants = sorted({t for ms in moves.values() for t, *_ in ms})
    if not instants:
        return None
    left, right = 110, 60
    step = (TIMELINE_W - left - right) / max(len(instants) - 1, 1)
    slot = {t: left + round(i * step) for i, t in enumerate(instants)}
    rows = []
    for i, (channel, ms) in enumerate(moves.items()):
        marks = tuple(Mark(slot[t], v, a, at, k % 2 == 0) for k, (t, v, a, at) in enumerate(ms))
        ends = [m.x for m in marks[1:]] + [TIMELINE_W - right + 30]
        bars = tuple(Bar(m.x, max(e - m.x, 2), m.version) for m, e in zip(marks, ends, strict=True))
        rows.append(Row(channel, 44 + i * TIMELINE_ROW, marks, bars))
    fmt = "%Y-%m-%d %H:%M"
    return Timeline(
        TIMELINE_W,
        24 + len(rows) * TIMELINE_ROW,
        tuple(rows),
        instants[0].strftime(fmt),
        instants[-1].strftime(fmt),
        left,
        right,
    )
