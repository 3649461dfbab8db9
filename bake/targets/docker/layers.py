"""A child image as its parent's layers plus one reproducible layer of its own.

Packer builds a child FROM its parent's image, and its commit adds one layer: what the
recipe's steps changed. Rewriting only that layer (:func:`bake.targets.docker.normalize.
rewrite_layer`, the same rules as a whole filesystem) keeps the parent's layers as they
are, byte for byte, so

- the work is the size of the change, not of the filesystem: the engine already holds
  the parent's layers, so loading the image sends the new layer alone;
- a registry and every deployer that has the parent keeps its layers (they are shared);
- the digest stays reproducible: the parent's layers are themselves reproducible (bake
  wrote them) and the new one is rewritten deterministically.

``docker save`` of Packer's image streams every layer once; the parent's are written to
the layout as they pass (each checked against the diff ID the parent declares) and the
new one is spilled and rewritten. :func:`read_save` is that reader; :func:`load_archive`
builds the ``docker load`` archive that names every layer but carries only the new one.
Anything unexpected (a parent bake did not write, a layer count that is not the parent's
plus one) gives None, and the caller rewrites the whole filesystem instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bake.attest.digest import sha256_file, split_digest
from bake.errors import BakeError

CHUNK = 1 << 20
SMALL = 4 << 20  # manifest.json and the config are read into memory; larger members are not
HISTORY_PREFIX = "bake: "  # how every history entry bake writes begins


@dataclass(frozen=True)
class Saved:
    """What ``docker save`` held: the image's config and its layers, in order, each by
    diff ID with its file (the digest checked). A layer in *reused* is a file of the
    parent's own layout (checked too), not one written here."""

    config: Mapping[str, Any]
    layers: tuple[tuple[str, Path], ...]
    reused: frozenset[str] = frozenset()


class Lost(BakeError):
    """A layer was read past (it looked like one of the parent's) and turned out not to be."""


def read_save(stream: IO[bytes], into: Path, reuse: Mapping[str, Path] | None = None) -> Saved:
    """Read a ``docker save`` tar (one image) once; layers go to files under *into*.

    *reuse*: files that may already hold some layers (the parent's OCI layout, by diff
    ID). A layer of the same size as one of them is hashed as it passes but not written;
    when its digest is that file's and the file's own content hashes to it too, the file
    is used. Else (a layer of that size that is not the parent's): :class:`Lost`."""
    candidates = {p.stat().st_size: (d, p) for d, p in (reuse or {}).items() if p.is_file()}
    files: dict[str, tuple[str, Path]] = {}  # member name -> (sha256 digest, file)
    reused: set[str] = set()
    small: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat
                if not info.isreg():
                    continue
                src = tar.extractfile(info)
                if src is None:
                    continue
                if info.name.endswith("/layer.tar") or info.name.startswith("blobs/"):
                    local = candidates.get(info.size)
                    files[info.name] = _spill(src, into) if local is None else _reuse(src, *local)
                    if local is not None:
                        reused.add(local[0])
                elif info.size <= SMALL:
                    small[info.name] = src.read()
    except tarfile.TarError as e:
        raise BakeError(f"cannot read `docker save` output as a tar: {e}") from e
    try:
        (entry,) = json.loads(small["manifest.json"])
        names: list[str] = list(entry["Layers"])
        config_name = str(entry["Config"])
        raw_config = small.get(config_name)
        if raw_config is None and config_name in files:
            raw_config = files[config_name][1].read_bytes()
        config = json.loads(raw_config or b"")
        diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
    except (KeyError, ValueError, TypeError) as e:
        raise BakeError(f"`docker save` output without the manifest and config bake expects: {e}") from e
    if len(names) != len(diff_ids) or any(n not in files for n in names):
        raise BakeError("`docker save` output does not hold every layer its manifest names")
    for name, diff_id in zip(names, diff_ids, strict=True):
        if files[name][0] != diff_id:
            raise BakeError(f"layer {name} of `docker save` is {files[name][0]}, its config says {diff_id}")
    layers = tuple((d, files[n][1]) for n, d in zip(names, diff_ids, strict=True))
    return Saved(config, layers, frozenset(reused & set(diff_ids)))


def _spill(src: IO[bytes], into: Path) -> tuple[str, Path]:
    h = hashlib.sha256()
    fd, name = tempfile.mkstemp(prefix=".saved-", dir=into)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
    return f"sha256:{h.hexdigest()}", Path(name)


def _reuse(src: IO[bytes], diff_id: str, local: Path) -> tuple[str, Path]:
    """The layer passing on *src* is the parent's *diff_id*, whose bytes *local* holds:
    both are hashed (the local file is a cache: it is believed only when it hashes right)."""
    h = hashlib.sha256()
    while chunk := src.read(CHUNK):
        h.update(chunk)
    passed = f"sha256:{h.hexdigest()}"
    if passed != diff_id or sha256_file(local) != diff_id:
        raise Lost(f"a layer of {local.stat().st_size} bytes was not the parent's {diff_id}")
    return passed, local


def parent_history(config: Mapping[str, Any], parent_layers: Sequence[str]) -> list[dict[str, Any]] | None:
    """The history entries of the parent's layers, when the saved image is the parent's
    layers plus one and the parent's history is bake's own (reproducible); else None."""
    diff_ids = list(config.get("rootfs", {}).get("diff_ids") or [])
    if not parent_layers or diff_ids[:-1] != list(parent_layers) or len(diff_ids) != len(parent_layers) + 1:
        return None
    history = [dict(h) for h in config.get("history") or [] if isinstance(h, dict)]
    own = history[: len(parent_layers)]
    if len(own) != len(parent_layers) or any(h.get("empty_layer") for h in own):
        return None
    if not all(str(h.get("created_by", "")).startswith(HISTORY_PREFIX) for h in own):
        return None
    return [{k: h[k] for k in ("created", "created_by") if k in h} for h in own]


def load_archive(
    out: IO[bytes], config: bytes, layer_files: Sequence[tuple[str, Path | None]], ref: str
) -> None:
    """A ``docker load`` archive of the image: the config, a manifest naming every layer,
    and the files of the layers given one (the engine skips opening a layer it holds)."""
    config_name = f"{split_digest(_sha(config))[1]}.json"
    layers = [f"{split_digest(diff_id)[1]}/layer.tar" for diff_id, _ in layer_files]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": layers}]).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, (_, path) in zip(layers, layer_files, strict=True):
            if path is not None:
                tar.add(str(path), arcname=name, recursive=False)
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"
