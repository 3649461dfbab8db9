"""Writes that others read: one way to make them atomic and durable.

A file is written to a temporary file in its own folder (created with its final mode, so a
private key is never readable by others, not even for a moment), fsynced, moved over the
destination with ``os.replace`` (or linked, when it must not replace anything) and the
folder is fsynced: readers see the old or the new content, never a mixture, and the new
content survives a crash once the call returns. A folder is switched in the same way, with
one rename. Temporary names start with ``.tmp-`` so sweeps can find what a killed process
left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bake.errors import BakeError

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``."""
    return path.parent / f"{TMP_PREFIX}{path.name}-{os.getpid()}-{os.urandom(6).hex()}"


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically and durably. With ``replace=False`` an existing
    ``path`` is never clobbered (FileExistsError), even one that appears meanwhile."""
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(folder.parent)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            tmp.replace(path)
        else:
            path.hardlink_to(tmp)  # link() fails if `path` exists, where replace() would clobber
        fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)


def write_file(path: Path, data: bytes, *, mode: int = 0o644, what: str = "") -> None:
    """:func:`atomic_write`, with an OSError turned into a BakeError that says what to check."""
    try:
        atomic_write(path, data, mode=mode)
    except OSError as e:
        raise BakeError(
            f"cannot write {what or path}: {e.strerror or e}",
            "check that the folder exists, is writable and the disk is not full",
        ) from e


def json_bytes(doc: Any) -> bytes:
    """JSON for people and diffs: sorted keys, two-space indent, a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json(path: Path, doc: Any, *, mode: int = 0o644) -> None:
    write_file(path, json_bytes(doc), mode=mode)


def write_cache(path: Path, doc: Any) -> None:
    """Best effort, for caches: a cache that cannot be written only costs time next run."""
    with contextlib.suppress(OSError):
        atomic_write(path, json.dumps(doc, sort_keys=True).encode("utf-8"))


@contextlib.contextmanager
def atomic_stream(dest: Path, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """A binary file to stream into; it appears at ``dest`` (fsynced) only when the block
    ends without an error, and is deleted otherwise."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(new: Path, target: Path) -> Path:
    """Put the finished folder ``new`` at ``target`` (one rename each way): a folder appears
    there only complete, and an earlier one is removed."""
    old = target.with_name(f"{TMP_PREFIX}{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.rename(old)
    new.rename(target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def sweep(folder: Path, prefix: str = TMP_PREFIX) -> int:
    """Remove what killed writers left in ``folder`` (names starting with ``prefix``)."""
    removed = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(prefix):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
    return removed
