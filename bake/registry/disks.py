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

``fetch`` downloads each file by its signed digest into one stage folder beside the
destinations (``.fetch-*``), checks the bytes, and only then switches the set in: a journal
naming every rename is written first, SIGINT and SIGTERM wait until the last rename, and
a fetch killed outright (SIGKILL) leaves a stage that the next fetch into that folder
completes (journal written: every file of the new set) or removes (not yet: none of it).
A deployer gets every file of one version, never a kernel of one and a disk of another.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bake.attest.digest import CHUNK, is_digest
from bake.errors import RegistryError, TrustError
from bake.infra.fsutil import atomic_stream, atomic_write, fsync_dir
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


STAGE_PREFIX = ".fetch-"
JOURNAL = "switch.json"  # in a stage: the renames that switch it in, written before the first
_LOCK = ".lock"  # in a stage: held by the fetch that owns it


def fetch(
    registry_url: str,
    ref: str | None,
    files: Mapping[str, str],
    dests: Mapping[str, Path],
    *,
    environ: Mapping[str, str] | None = None,
    send: Send | None = None,
    rename: Callable[[Path, Path], object] = os.replace,
) -> list[Fetched]:
    """Download the files (role -> signed digest) to `dests` (role -> path, one folder):
    all of them or none (see the module's docstring)."""
    missing = sorted(set(files) - set(dests))
    if missing:
        raise RegistryError(f"no destination for {', '.join(missing)}")
    folders = {dests[role].parent for role in files}
    if len(folders) != 1:
        raise RegistryError("the files of an artifact are fetched into one folder")
    (folder,) = folders
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stages(folder, rename)
    with _stage(folder) as stage:
        got = []
        for role, digest in sorted(files.items()):
            what = f"the {role} {digest[:19]}"
            reader = _reader(registry_url, ref, digest, what, environ, send)
            size = _copy_checked(reader, stage / dests[role].name, digest, what)
            got.append(Fetched(role, dests[role], digest, size))
        _switch(stage, {f.path.name: f.path.name for f in got}, rename)
        return got


@contextlib.contextmanager
def _stage(folder: Path) -> Iterator[Path]:
    """A fresh stage folder in ``folder``, locked by this process, removed afterwards."""
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=folder))
    fd = os.open(stage / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(fd)


def _switch(stage: Path, names: Mapping[str, str], rename: Callable[[Path, Path], object]) -> None:
    """Rename the staged files (stage name -> destination name) into the stage's folder:
    the journal first, and no SIGINT or SIGTERM until the last rename is done."""
    with _signals_deferred():
        atomic_write(stage / JOURNAL, json.dumps(dict(names)).encode())
        _apply_journal(stage, rename)


def _apply_journal(stage: Path, rename: Callable[[Path, Path], object]) -> None:
    names = json.loads((stage / JOURNAL).read_text())
    for staged, dest in sorted(names.items()):
        if (stage / staged).exists():  # a rename done before a kill is not done again
            rename(stage / staged, stage.parent / dest)
    fsync_dir(stage.parent)
    (stage / JOURNAL).unlink()


def sweep_stages(folder: Path, rename: Callable[[Path, Path], object] = os.replace) -> int:
    """Finish what fetches killed in ``folder`` left: a stage with a journal is switched in
    (its files were all checked), one without is removed; stages of live fetches are left
    alone. Returns how many were found."""
    found = 0
    for stage in sorted(folder.glob(f"{STAGE_PREFIX}*")):
        if not stage.is_dir() or stage.is_symlink():
            with contextlib.suppress(OSError):
                if not _alive(stage.name):  # a stage file of an older bake
                    stage.unlink()
                    found += 1
            continue
        try:
            fd = os.open(stage / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its fetch is running
        try:
            if (stage / JOURNAL).is_file():
                with _signals_deferred():
                    _apply_journal(stage, rename)
            shutil.rmtree(stage, ignore_errors=True)
            found += 1
        finally:
            os.close(fd)
    return found


def _alive(name: str) -> bool:
    """Whether the process whose pid ends a stage file's name (``.fetch-NAME-PID``) runs."""
    pid = name.rpartition("-")[2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are held back (and delivered right after) while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


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
