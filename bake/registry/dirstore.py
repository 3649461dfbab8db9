"""The ``dir:PATH`` registry backend: a folder on a local or shared POSIX file system.

Layout::

    PATH/index.json                 the signed index (a DSSE envelope)
    PATH/blobs/sha256/<hex>         content-addressed blobs (image documents, envelopes)
    PATH/.lock                      writers hold flock(LOCK_EX) on it

Every write goes to a temporary file in the destination folder, is fsynced, renamed over
the destination with ``os.replace`` and the folder is fsynced. A publish writes its blobs
first and the index last, so one killed at any instant leaves the registry as it was
before or after: the old index only names blobs that are never changed. (A kill can leave
an unreferenced ``.tmp-*`` file or blob behind; both are harmless.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bake.attest.digest import is_digest, sha256_bytes
from bake.infra import fsutil
from bake.registry.model import RELATIVE_LAYOUT, validate_name

if TYPE_CHECKING:
    from bake.infra.process import Runner
    from bake.registry.disks import DiskFile
    from bake.registry.images import PushedImage

from bake.errors import RegistryError, TrustError

INDEX_FILE = "index.json"
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

    def blob_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise RegistryError(f"{digest!r} is not a blob digest", "expected sha256: and 64 lowercase hex")
        return self.root.joinpath(*BLOB_DIR, digest.removeprefix("sha256:"))

    def read_index_envelope(self) -> dict[str, Any] | None:
        path = self.root / INDEX_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e
        try:
            envelope = json.loads(data)
        except ValueError:
            raise TrustError(f"{path} is not valid JSON", "the index was damaged or tampered with") from None
        if not isinstance(envelope, dict):
            raise TrustError(f"{path} is not a DSSE envelope (a JSON object)")
        return envelope

    def read_blob(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(
                f"blob {digest} is missing from {self.url}",
                "the registry is incomplete (a partial copy?); restore it from a backup",
            ) from None
        except OSError as e:
            raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e
        actual = sha256_bytes(data)
        if actual != digest:
            raise TrustError(
                f"blob {digest} in {self.url} has the content of {actual}",
                "the registry was damaged or tampered with; restore it from a backup",
            )
        return data

    def write_blob(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        path = self.blob_path(digest)
        try:
            if sha256_bytes(path.read_bytes()) == digest:
                return digest  # already stored: content addressing makes this idempotent
        except OSError:
            pass  # absent (or unreadable): (re)write it below
        atomic_write(path, data)
        return digest

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

    def write_index_envelope(self, envelope: Mapping[str, Any]) -> None:
        data = json.dumps(envelope, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        atomic_write(self.root / INDEX_FILE, data)

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
        """Blobs beside the index's own: their digests find them."""
        from bake.registry import disks

        disks.store_in_dir(self.root, files)
        return None
