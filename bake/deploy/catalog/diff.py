"""What changed between two versions of an image: the reviewer's view before a promote.

Packages come from the versions' SBOMs, keyed by (name, architecture); a version change
is an upgrade or a downgrade by Debian's own ordering (epochs, ``~``, revisions), which
python-debian implements as dpkg does. Files come from the versions' signed file
manifests, compared path by path with the aspects `bake drift` uses. Lists are bounded
(``limit``) while the counts stay exact, so a page stays small whatever changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from debian.debian_support import version_compare

from bake.attest.filemanifest import Entry, FileManifest
from bake.deploy.catalog.facts import Package
from bake.deploy.drift import Aspect, differences

LIMIT = 500  # changes listed per group; the counts are always exact


@dataclass(frozen=True)
class PackageChange:
    name: str
    arch: str
    before: str | None  # None: added
    after: str | None  # None: removed


@dataclass(frozen=True)
class PackageDiff:
    added: tuple[PackageChange, ...]
    removed: tuple[PackageChange, ...]
    upgraded: tuple[PackageChange, ...]
    downgraded: tuple[PackageChange, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded or self.downgraded)


def package_diff(before: Sequence[Package], after: Sequence[Package]) -> PackageDiff:
    old = {(p.name, p.arch): p.version for p in before}
    new = {(p.name, p.arch): p.version for p in after}
    added: list[PackageChange] = []
    removed: list[PackageChange] = []
    up: list[PackageChange] = []
    down: list[PackageChange] = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        change = PackageChange(key[0], key[1], a, b)
        if a is None:
            added.append(change)
        elif b is None:
            removed.append(change)
        elif a != b:
            (up if version_compare(b, a) > 0 else down).append(change)
    return PackageDiff(tuple(added), tuple(removed), tuple(up), tuple(down))


@dataclass(frozen=True)
class FileChange:
    path: str
    aspects: tuple[Aspect, ...]  # empty for an added or removed path
    kind: str  # file | dir | symlink | other (the new one's, or the removed one's)


@dataclass(frozen=True)
class FileDiff:
    added: tuple[FileChange, ...]
    removed: tuple[FileChange, ...]
    changed: tuple[FileChange, ...]
    counts: tuple[int, int, int]  # added, removed, changed (exact; the lists may be cut)

    @property
    def empty(self) -> bool:
        return self.counts == (0, 0, 0)


def file_diff(before: FileManifest, after: FileManifest, limit: int = LIMIT) -> FileDiff:
    """Paths added, removed and changed; entries are sorted by path in both manifests, so
    one merge pass does it."""
    added: list[FileChange] = []
    removed: list[FileChange] = []
    changed: list[FileChange] = []
    counts = [0, 0, 0]

    def put(group: list[FileChange], index: int, change: FileChange) -> None:
        counts[index] += 1
        if len(group) < limit:
            group.append(change)

    old, new = _sorted(before.entries), _sorted(after.entries)
    i = j = 0
    while i < len(old) or j < len(new):
        a = old[i] if i < len(old) else None
        b = new[j] if j < len(new) else None
        if b is None or (a is not None and a.path < b.path):
            assert a is not None
            put(removed, 1, FileChange(a.path, (), a.kind))
            i += 1
        elif a is None or b.path < a.path:
            put(added, 0, FileChange(b.path, (), b.kind))
            j += 1
        else:
            aspects = differences(a, b)
            if aspects:
                put(changed, 2, FileChange(b.path, aspects, b.kind))
            i, j = i + 1, j + 1
    return FileDiff(tuple(added), tuple(removed), tuple(changed), (counts[0], counts[1], counts[2]))


def _sorted(entries: Sequence[Entry]) -> Sequence[Entry]:
    ordered = all(entries[k].path < entries[k + 1].path for k in range(len(entries) - 1))
    return entries if ordered else sorted(entries, key=lambda e: e.path)


@dataclass(frozen=True)
class FilesSummary:
    """A file manifest at a glance."""

    total: int
    kinds: tuple[tuple[str, int], ...]  # file, dir, symlink, other → count
    volatile: tuple[str, ...]
    special: tuple[tuple[str, str], ...]  # setuid / setgid files: (path, mode), bounded
    special_count: int


def files_summary(manifest: FileManifest, limit: int = 100) -> FilesSummary:
    kinds: dict[str, int] = {"file": 0, "dir": 0, "symlink": 0, "other": 0}
    special = []
    for e in manifest.entries:
        kinds[e.kind] += 1
        if e.kind == "file" and e.mode & 0o6000:
            special.append((e.path, f"{e.mode:04o}"))
    return FilesSummary(
        len(manifest.entries), tuple(kinds.items()), manifest.volatile, tuple(special[:limit]), len(special)
    )
