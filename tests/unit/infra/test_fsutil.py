"""The one atomic write: readers see old or new, keys are never readable by others, a
failed write leaves nothing, a folder is switched in whole."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bake.infra import fsutil


def test_atomic_write_replaces_and_creates_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "doc.json"
    fsutil.atomic_write(path, b"one")
    fsutil.atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["doc.json"]  # no temporary left


def test_a_private_file_is_created_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "key"
    fsutil.atomic_write(path, b"secret", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_replace_an_existing_file_is_never_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        fsutil.atomic_write(path, b"theirs", replace=False)
    assert path.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["key"]


def test_a_stream_appears_only_when_the_block_ends_well(tmp_path: Path) -> None:
    dest = tmp_path / "disk"
    with pytest.raises(ValueError, match="bad bytes"), fsutil.atomic_stream(dest) as out:
        out.write(b"half")
        raise ValueError("bad bytes")
    assert list(tmp_path.iterdir()) == []
    with fsutil.atomic_stream(dest) as out:
        out.write(b"whole")
    assert dest.read_bytes() == b"whole"


def test_replace_dir_switches_a_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "layout"
    for content in ("old", "new"):
        new = tmp_path / f"building-{content}"
        new.mkdir()
        (new / "index.json").write_text(content)
        fsutil.replace_dir(new, target)
    assert (target / "index.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]


def test_sweep_removes_what_killed_writers_left(tmp_path: Path) -> None:
    (tmp_path / ".tmp-doc.json-1-ab").write_bytes(b"x")
    (tmp_path / ".tmp-layout.old-1").mkdir()
    (tmp_path / "doc.json").write_bytes(b"kept")
    assert fsutil.sweep(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_write_cache_never_fails(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    fsutil.write_cache(blocked / "cache.json", {"a": 1})  # cannot be written: only slower later
    fsutil.write_cache(tmp_path / "cache.json", {"a": 1})
    assert (tmp_path / "cache.json").read_text() == '{"a": 1}'
