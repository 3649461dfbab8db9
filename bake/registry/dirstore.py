"""The ``dir:PATH`` registry backend: a folder on a local or shared POSIX file system.

Layout (a TUF repository any static web server can serve as it is)::

    PATH/metadata/N.ROLE.json       TUF metadata (consistent snapshots)
    PATH/metadata/timestamp.json    the one file that is replaced: the commit point
    PATH/targets/DIR/SHA256.BASE    target files: image documents, attestations, …
    PATH/blobs/sha256/<hex>         VM disk, kernel and initrd bytes
    PATH/oci/NAME                   container images, as OCI image layouts
    PATH/.lock                      writers hold flock(LOCK_EX) on it

Every write goes to a temporary file in the destination folder, is fsynced, renamed over
the destination with ``os.replace`` and the folder is fsynced. A change writes its target
files first, then the new role versions, the snapshot, and the timestamp last, so one
killed at any instant leaves the registry as it was before or after: the old timestamp only
names files that are never changed. (A kill can leave an unreferenced ``.tmp-*`` file or
target behind; both are harmless.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bake.attest.digest import sha256_bytes
from bake.infra import fsutil
from bake.registry.layout import hash_of_stored
from bake.registry.model import RELATIVE_LAYOUT, validate_name

if TYPE_CHECKING:
    from bake.infra.process import Runner
    from bake.registry.disks import DiskFile
    from bake.registry.images import PushedImage

from bake.errors import RegistryError, TrustError

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
LOCK_FILE = ".lock"
BLOB_DIR = ("blobs", "sha256")


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """:func:`bake.infra.fsutil.atomic_write`, failing as a RegistryError."""
    try:
        fsutil.atomic_write(path, data, mode=mode)
    except OSError as e:
        raise RegistryError(
            f"cannot write {path}: {e.strerror or e}",
            "check that the folder exists, is writable and the disk is not full",
        ) from e


@dataclass(frozen=True)
class DirRegistry:
    """A registry in the folder ``root``. Satisfies :class:`bake.registry.backend.Registry`."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> DirRegistry:
        return cls(Path(path).expanduser().resolve())

    @property
    def url(self) -> str:
        return f"dir:{self.root}"

    def _metadata_path(self, name: str) -> Path:
        if "/" in name or name.startswith(".") or not name.endswith(".json"):
            raise RegistryError(f"{name!r} is not a metadata file name")
        return self.root / METADATA_DIR / name

    def read_metadata(self, name: str) -> bytes | None:
        path = self._metadata_path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e

    def write_metadata(self, name: str, data: bytes) -> None:
        atomic_write(self._metadata_path(name), data)

    def delete_metadata(self, name: str) -> None:
        path = self._metadata_path(name)
        path.unlink(missing_ok=True)

    def _target_path(self, stored: str) -> tuple[Path, str]:
        parts = stored.split("/")
        if not stored or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"{stored!r} is not a target path")
        return self.root.joinpath(TARGETS_DIR, *parts), "sha256:" + hash_of_stored(stored)

    def read_target(self, stored: str) -> bytes:
        path, digest = self._target_path(stored)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(
                f"{stored} is missing from {self.url}",
                "the registry is incomplete (a partial copy?); restore it from a backup",
            ) from None
        except OSError as e:
            raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e
        actual = sha256_bytes(data)
        if actual != digest:
            raise TrustError(
                f"{stored} in {self.url} has the content of {actual}",
                "the registry was damaged or tampered with; restore it from a backup",
            )
        return data

    def write_target(self, stored: str, data: bytes) -> None:
        path, digest = self._target_path(stored)
        if sha256_bytes(data) != digest:
            raise RegistryError(f"internal error: the bytes of {stored} do not match its name")
        if path.is_file() and path.stat().st_size == len(data):
            return  # content-addressed: already stored
        atomic_write(path, data)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise RegistryError(f"cannot lock {self.url}: {e.strerror or e}") from e
        try:
            # flock is held by the open file description: the kernel drops it when the
            # process dies, so a killed publisher never leaves the registry locked. It is
            # exclusive across processes of one host (and NFSv4 clients, where Linux maps
            # it to byte-range locks); other shared file systems may not honour it.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def store_image(
        self,
        runner: Runner,
        docker_host: str,
        image_id: str,
        name: str,
        tag: str,
        *,
        source: str | None = None,
    ) -> PushedImage:
        """An OCI image layout per image name, ``PATH/oci/NAME``; the ref is stored relative
        to the registry root (``oci-layout:oci/NAME@…``), so the folder can be moved."""
        from bake.registry import images

        validate_name(name)
        layout = self.root / "oci" / name
        layout.parent.mkdir(parents=True, exist_ok=True)
        # skopeo rewrites the layout's index.json in place: one writer per layout at a time
        with (layout.parent / f".{name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pushed = images.export_docker_image_to_layout(
                runner, docker_host, image_id, layout, tag, source=source
            )
        return replace(pushed, ref=f"{RELATIVE_LAYOUT}oci/{name}@{pushed.digest}")

    def attach_attestations(
        self, image_ref: str, envelopes: Mapping[str, bytes], created: str
    ) -> Mapping[str, str]:
        """Nothing: an OCI layout has no tags for cosign or referrers to look in that
        this registry's own index does not already cover."""
        return {}

    def store_files(self, files: Sequence[DiskFile], name: str, tag: str) -> str | None:
        """Blobs under ``PATH/blobs/sha256``: their digests find them."""
        from bake.registry import disks

        disks.store_in_dir(self.root, files)
        return None
