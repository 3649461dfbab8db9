"""`bake outdated`: channel heads built on a parent that has a newer version since.

Pure over a verified registry snapshot: for each channel head with a parent
(`NAME@VERSION+BUILD`), compare with the parent image's newest non-revoked build.
"""

from __future__ import annotations

from dataclasses import dataclass

from bake.registry.client import Snapshot
from bake.registry.model import ImageDoc
from bake.registry.semver import parse


@dataclass(frozen=True)
class Outdated:
    name: str
    channel: str
    version: str
    parent: str
    newer: str

    def to_json(self) -> dict[str, str]:
        return dict(self.__dict__)


def newest(doc: ImageDoc) -> str | None:
    live = [
        (v, b)
        for v, b in doc.versions.items()
        if v not in doc.revocations and b.version not in doc.revocations
    ]
    if not live:
        return None
    return max(live, key=lambda vb: (parse(vb[1].version).precedence(), vb[1].build))[0]


def find_outdated(snapshot: Snapshot) -> list[Outdated]:
    out: list[Outdated] = []
    for name in snapshot.names():
        doc = snapshot.image(name)
        for channel, ch in sorted(doc.channels.items()):
            build = doc.versions.get(ch.current)
            if build is None or build.parent is None:
                continue
            pname, _, pversion = build.parent.rpartition("@")
            pdoc = snapshot.get(pname)
            latest = newest(pdoc) if pdoc is not None else None
            if latest is not None and latest != pversion:
                out.append(Outdated(name, channel, ch.current, build.parent, f"{pname}@{latest}"))
    return out
