"""Naming what differs between two images: `bake build --check-reproducible` shows this
when two bakes of the same inputs did not give one digest.

`diff_layers` reads two OCI layouts (the first image of each): the config fields that
differ, then every path of the merged filesystems that differs, and how (kind, mode,
owner, time, content, link target, device, xattrs). Layers are read once each in
tarfile's stream mode; a later layer's entries replace an earlier one's and its whiteouts
remove what they name.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bake.attest.digest import split_digest
from bake.errors import BakeError
from bake.targets.docker.normalize import CHUNK, TAR_BUFSIZE, path_key, relative

WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"  # a layer's marks for what it removes (OCI image spec)


@dataclass(frozen=True, slots=True)
class Stat:
    """What one path is, for comparing: a hard link shows its group's content digest."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    sha256: str | None = None
    target: str | None = None
    device: tuple[int, int] | None = None
    xattrs: tuple[tuple[str, str], ...] = ()


_KINDS = {
    tarfile.DIRTYPE: "folder",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "char device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


def summarize(stream: IO[bytes], into: dict[str, Stat] | None = None) -> dict[str, Stat]:
    """Every path of the tar on *stream* (read once; gzip-compressed too) and what it is."""
    out = {} if into is None else into
    try:
        with tarfile.open(
            fileobj=stream, mode="r|*", bufsize=TAR_BUFSIZE, encoding="utf-8", errors="surrogateescape"
        ) as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]
                rel = relative(info.name)
                if rel:
                    out["/" + rel] = _stat(tar, info, out)
    except tarfile.TarError as e:
        raise BakeError(f"cannot read a layer as a tar: {e}") from e
    return out


def _stat(tar: tarfile.TarFile, info: tarfile.TarInfo, seen: Mapping[str, Stat]) -> Stat:
    digest = target = device = None
    if info.isreg():
        h = hashlib.sha256()
        f = tar.extractfile(info)
        if f is not None:
            with f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        digest = h.hexdigest()
    elif info.islnk():
        target = "/" + relative(info.linkname)
        linked = seen.get(target)
        digest = linked.sha256 if linked else None
    elif info.issym():
        target = info.linkname
    elif info.ischr() or info.isblk():
        device = (info.devmajor, info.devminor)
    xattrs = tuple(sorted((k, v) for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.")))
    kind = "file" if info.isreg() else _KINDS.get(info.type, repr(info.type))
    return Stat(kind, info.mode & 0o7777, info.uid, info.gid, int(info.mtime), digest, target, device, xattrs)


def diff_stats(a: Mapping[str, Stat], b: Mapping[str, Stat]) -> list[str]:
    """One line per path that differs: ``/etc/shadow: content; mtime 1577836800 ≠ …``."""
    lines = []
    for path in sorted(a.keys() | b.keys(), key=path_key):
        x, y = a.get(path), b.get(path)
        if x is None:
            lines.append(f"{path}: missing in the first")
        elif y is None:
            lines.append(f"{path}: missing in the second")
        elif x != y:
            lines.append(f"{path}: " + "; ".join(_what(x, y)))
    return lines


def _what(x: Stat, y: Stat) -> list[str]:
    what = []
    if x.kind != y.kind:
        what.append(f"type {x.kind} ≠ {y.kind}")
    if x.sha256 != y.sha256:
        what.append("content")
    if x.target != y.target:
        what.append(f"target {x.target} ≠ {y.target}")
    if x.mode != y.mode:
        what.append(f"mode {x.mode:04o} ≠ {y.mode:04o}")
    if (x.uid, x.gid) != (y.uid, y.gid):
        what.append(f"owner {x.uid}:{x.gid} ≠ {y.uid}:{y.gid}")
    if x.mtime != y.mtime:
        what.append(f"mtime {x.mtime} ≠ {y.mtime}")
    if x.device != y.device:
        what.append(f"device {x.device} ≠ {y.device}")
    if x.xattrs != y.xattrs:
        what.append("xattrs")
    return what


def diff_layers(a_layout: Path, b_layout: Path) -> list[str]:
    """What differs between the images of two OCI layouts (the first image of each):
    config fields (``config: created differs``), then paths of the layers' merged
    filesystem (a later layer's entry replaces an earlier one's; whiteouts remove)."""
    a_config, a_layers = _read_layout(a_layout)
    b_config, b_layers = _read_layout(b_layout)
    a_own, b_own = a_config.pop("config", {}), b_config.pop("config", {})
    lines = [
        f"config: {k} differs"
        for x, y in ((a_config, b_config), (a_own, b_own))
        for k in sorted(x.keys() | y.keys())
        if k != "rootfs" and x.get(k) != y.get(k)
    ]
    if [d for d, _ in a_layers] == [d for d, _ in b_layers]:
        return lines
    return lines + diff_stats(_merged(a_layers), _merged(b_layers))


def _merged(stack: Sequence[tuple[str, Path]]) -> dict[str, Stat]:
    """The filesystem the layers make: a layer's entries replace those below; its
    whiteouts (``.wh.NAME``) remove NAME and what is below it, an opaque folder
    (``.wh..wh..opq``) what the layers below had in it."""
    out: dict[str, Stat] = {}
    for _, path in stack:
        with path.open("rb") as f:
            own = summarize(f)
        for name in [n for n in own if posixpath.basename(n).startswith(WHITEOUT)]:
            folder, base = posixpath.split(name)
            gone = folder if base == OPAQUE else posixpath.join(folder, base.removeprefix(WHITEOUT))
            below = gone + "/"
            for lower in [n for n in out if n.startswith(below) or (n == gone and base != OPAQUE)]:
                del out[lower]
            del own[name]
        out.update(own)
    return out


def _read_layout(layout: Path) -> tuple[dict[str, Any], list[tuple[str, Path]]]:
    def blob(digest: str) -> bytes:
        path = layout / "blobs" / "sha256" / split_digest(digest)[1]
        try:
            return path.read_bytes()
        except OSError as e:
            raise BakeError(f"cannot read {path}: {e.strerror or e}") from e

    try:
        index = json.loads((layout / "index.json").read_bytes())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layers = [
            (str(d["digest"]), layout / "blobs" / "sha256" / split_digest(d["digest"])[1])
            for d in manifest["layers"]
        ]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise BakeError(f"{layout} is not an OCI image layout bake can read: {e}") from e
    return config, layers
