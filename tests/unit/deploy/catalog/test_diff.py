"""bake.deploy.catalog.diff: packages by Debian's version order, files path by path."""

from __future__ import annotations

from bake.attest.filemanifest import Entry, FileManifest
from bake.deploy.catalog.diff import file_diff, files_summary, package_diff
from bake.deploy.catalog.facts import Package


def pkgs(*items: tuple[str, str]) -> tuple[Package, ...]:
    return tuple(Package(n, "amd64", v, n) for n, v in items)


def test_package_diff_uses_debian_version_order() -> None:
    before = pkgs(("a", "1.0~rc1"), ("b", "1:0.9"), ("c", "2.0-1"), ("gone", "1"), ("same", "3"))
    after = pkgs(("a", "1.0"), ("b", "2.0"), ("c", "2.0-1+deb12u1"), ("new", "1"), ("same", "3"))
    d = package_diff(before, after)
    assert [(c.name, c.before, c.after) for c in d.upgraded] == [
        ("a", "1.0~rc1", "1.0"),
        ("c", "2.0-1", "2.0-1+deb12u1"),
    ]
    assert [(c.name, c.before, c.after) for c in d.downgraded] == [("b", "1:0.9", "2.0")]  # the epoch wins
    assert [c.name for c in d.added] == ["new"] and [c.name for c in d.removed] == ["gone"]
    assert not d.empty and package_diff(before, before).empty


def test_package_diff_keys_by_architecture() -> None:
    before = (Package("libc6", "amd64", "2.36", "glibc"),)
    after = (*before, Package("libc6", "i386", "2.36", "glibc"))
    d = package_diff(before, after)
    assert [(c.name, c.arch) for c in d.added] == [("libc6", "i386")]


def manifest(*entries: Entry) -> FileManifest:
    return FileManifest("sha256:" + "0" * 64, entries, ("/tmp",))


def test_file_diff_finds_added_removed_and_changed_aspects() -> None:
    a = manifest(
        Entry("/etc", "dir", 0o755, 0, 0),
        Entry("/etc/a", "file", 0o644, 0, 0, "a" * 64),
        Entry("/etc/b", "file", 0o644, 0, 0, "b" * 64),
        Entry("/etc/l", "symlink", 0o777, 0, 0, target="a"),
    )
    b = manifest(
        Entry("/etc", "dir", 0o755, 0, 0),
        Entry("/etc/a", "file", 0o600, 0, 0, "c" * 64),
        Entry("/etc/c", "file", 0o644, 0, 0, "c" * 64),
        Entry("/etc/l", "file", 0o644, 0, 0, "d" * 64),
    )
    d = file_diff(a, b)
    assert [(c.path, c.aspects) for c in d.changed] == [
        ("/etc/a", ("content", "mode")),
        ("/etc/l", ("type",)),
    ]
    assert [c.path for c in d.added] == ["/etc/c"] and [c.path for c in d.removed] == ["/etc/b"]
    assert d.counts == (1, 1, 2) and file_diff(a, a).empty


def test_file_diff_lists_are_bounded_but_counts_exact() -> None:
    many = manifest(*(Entry(f"/f{i:04d}", "file", 0o644, 0, 0, "a" * 64) for i in range(50)))
    d = file_diff(manifest(), many, limit=10)
    assert len(d.added) == 10 and d.counts == (50, 0, 0)


def test_file_diff_accepts_unsorted_manifests() -> None:
    a = manifest(Entry("/b", "dir", 0o755, 0, 0), Entry("/a", "dir", 0o755, 0, 0))
    b = manifest(Entry("/a", "dir", 0o755, 0, 0), Entry("/b", "dir", 0o755, 0, 0))
    assert file_diff(a, b).empty


def test_files_summary_counts_kinds_and_lists_setuid_files() -> None:
    m = manifest(
        Entry("/usr/bin/su", "file", 0o4755, 0, 0, "a" * 64),
        Entry("/usr/bin/wall", "file", 0o2755, 0, 5, "b" * 64),
        Entry("/usr", "dir", 0o755, 0, 0),
    )
    s = files_summary(m)
    assert s.total == 3 and dict(s.kinds) == {"file": 2, "dir": 1, "symlink": 0, "other": 0}
    assert s.special == (("/usr/bin/su", "4755"), ("/usr/bin/wall", "2755")) and s.special_count == 2
