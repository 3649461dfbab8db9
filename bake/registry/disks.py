"""VM images in a registry: a disk, the kernel and the initrd it boots with, by digest.

A qcow2 VM image is three files. Its signed image document names each by role and sha256
(``TargetOutput.files``); the bytes live where the registry keeps content:

- ``dir:PATH``: ``PATH/blobs/sha256/<hex>``. Copied in
  streamed (1 MiB at a time, flat memory), hashed on the way, fsynced and renamed into
  place, so a reader never sees half a disk and an interrupted publish leaves at most a
  ``.tmp-*`` file.
- ``oci://HOST/PREFIX``: one OCI artifact in ``HOST/PREFIX/NAME`` (artifactType
  ``application/vnd.bake.disk.qcow2.v1``) whose three layers are the files, each with its
  ``org.opencontainers.image.title``; the image document records the artifact's ref by digest.

``fetch`` downloads each file by its signed digest into a temporary file beside the
destination, checks the bytes, and only then renames all of them into place: a deployer
gets every file right or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bake.attest.digest import CHUNK, is_digest
from bake.errors import RegistryError, TrustError
from bake.infra.fsutil import atomic_stream
from bake.registry.dirstore import BLOB_DIR
from bake.registry.images import QCOW2_ARTIFACT_TYPE, TITLE, RegistryRef, _check_tag, parse_repo
from bake.registry.ocistore import EMPTY_JSON, OCI_MANIFEST, UPLOAD_CHUNK, Descriptor, Send, artifact_manifest
from bake.registry.ocistore import distribution as oci_client

MEDIA_TYPES = {
    "disk": "application/vnd.bake.disk.qcow2",
    "kernel": "application/vnd.bake.disk.kernel",
    "initrd": "application/vnd.bake.disk.initrd",
}


@dataclass(frozen=True)
class DiskFile:
    role: str  # disk | kernel | initrd
    path: Path
    digest: str  # sha256:… as recorded when the bake was verified


@dataclass(frozen=True)
class Fetched:
    role: str
    path: Path
    digest: str
    size: int


def _hex(digest: str) -> str:
    if not is_digest(digest):
        raise RegistryError(f"{digest!r} is not a sha256 digest")
    return digest.removeprefix("sha256:")


def _copy_checked(
    read: Callable[[Callable[[bytes], object]], object], dest: Path, digest: str, what: str
) -> int:
    """Stream bytes from `read(sink)` into a temporary file beside `dest`, hashing them;
    it appears at `dest` only if they hash to `digest`. Returns the size."""
    h = hashlib.sha256()
    size = 0
    with atomic_stream(dest) as out:

        def sink(chunk: bytes) -> None:
            nonlocal size
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)

        read(sink)
        actual = f"sha256:{h.hexdigest()}"
        if actual != digest:
            raise TrustError(
                f"{what} has the content of {actual}, not the signed {digest}",
                "the registry's copy was damaged or tampered with; republish the bake",
            )
    return size


def _read_file(path: Path, what: str) -> Callable[[Callable[[bytes], object]], object]:
    def read(sink: Callable[[bytes], object]) -> None:
        try:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    sink(chunk)
        except FileNotFoundError:
            raise RegistryError(f"{what} is missing ({path})", "was it published? see `bake ls`") from None

    return read


# --------------------------------------------------------------------------- dir:


def dir_blob(root: Path, digest: str) -> Path:
    return root.joinpath(*BLOB_DIR, _hex(digest))


def store_in_dir(root: Path, files: Sequence[DiskFile]) -> None:
    """Copy each file into the registry's blobs (skipped when that blob is already there:
    content addressing makes a republish free)."""
    for f in files:
        dest = dir_blob(root, f.digest)
        if dest.is_file() and dest.stat().st_size == f.path.stat().st_size:
            continue
        _copy_checked(_read_file(f.path, f"the {f.role} {f.path}"), dest, f.digest, f"{f.path}")


# --------------------------------------------------------------------------- oci://


def push_to_oci(
    files: Sequence[DiskFile],
    dest_repo: str,
    tag: str,
    *,
    chunk: int = UPLOAD_CHUNK,
    environ: Mapping[str, str] | None = None,
    send: Send | None = None,
) -> str:
    """Push the files as the layers of one artifact; return its ref by digest."""
    location = parse_repo(dest_repo)
    client = oci_client(location, environ, send)
    layers = []
    for f in files:
        size = client.push_file(location.prefix, f.path, f.digest, chunk)
        layers.append(Descriptor(MEDIA_TYPES[f.role], f.digest, size, {TITLE: f.path.name}))
    client.push_blob(location.prefix, EMPTY_JSON)  # the config every artifact manifest names
    manifest = artifact_manifest(QCOW2_ARTIFACT_TYPE, layers)
    stored = client.put_manifest(location.prefix, _check_tag(tag), manifest, OCI_MANIFEST)
    return str(RegistryRef(location, stored))


# --------------------------------------------------------------------------- fetch


def fetch(
    registry_url: str,
    ref: str | None,
    files: Mapping[str, str],
    dests: Mapping[str, Path],
    *,
    environ: Mapping[str, str] | None = None,
    send: Send | None = None,
) -> list[Fetched]:
    """Download the files (role -> signed digest) to `dests` (role -> path): all or none."""
    missing = sorted(set(files) - set(dests))
    if missing:
        raise RegistryError(f"no destination for {', '.join(missing)}")
    staged: list[tuple[Path, Fetched]] = []
    try:
        for role, digest in sorted(files.items()):
            dest = dests[role]
            stage = dest.parent / f".fetch-{dest.name}-{os.getpid()}"
            what = f"the {role} {digest[:19]}"
            size = _copy_checked(_reader(registry_url, ref, digest, what, environ, send), stage, digest, what)
            staged.append((stage, Fetched(role, dest, digest, size)))
        for stage, got in staged:
            stage.replace(got.path)
        return [got for _, got in staged]
    finally:
        for stage, _ in staged:
            with contextlib.suppress(OSError):
                stage.unlink()


def _reader(
    registry_url: str,
    ref: str | None,
    digest: str,
    what: str,
    environ: Mapping[str, str] | None,
    send: Send | None,
) -> Callable[[Callable[[bytes], object]], object]:
    if registry_url.startswith("dir:"):
        root = Path(registry_url.removeprefix("dir:"))
        return _read_file(dir_blob(root, digest), what)
    if ref is None:
        raise RegistryError(f"{what} has no artifact ref in {registry_url}", "republish the bake")
    parsed = RegistryRef.parse(ref)
    client = oci_client(parsed.location, environ, send)

    def read(sink: Callable[[bytes], object]) -> None:
        client.stream_blob(parsed.repository, digest, sink)

    return read
