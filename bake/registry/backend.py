"""Where a registry lives: the ``Registry`` protocol and the URL -> backend factory.

A backend stores a TUF repository (bake.registry.layout): metadata files by name
(``N.ROLE.json``, ``timestamp.json``) and target files by their stored path
(``DIR/SHA256.BASE``), plus the artifacts' own bytes (container images, VM disks).
Everything a backend returns is untrusted until the TUF client has checked it; a backend
must at least refuse a target file whose bytes do not match the hash in its name.

Backends form a plugin family (a Protocol + a dict): add one by adding an entry to
``BACKENDS``. ``dir:PATH`` is a folder; ``oci://HOST[:PORT]/PREFIX`` an OCI Distribution
registry; ``postgresql://…?images=oci://…`` keeps the metadata in PostgreSQL (real
compare-and-swap for publishers on many machines) and the image bytes in an OCI registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from bake.errors import RegistryError
from bake.textsafe import hide_credentials

if TYPE_CHECKING:
    from bake.infra.process import Runner
    from bake.registry.disks import DiskFile
    from bake.registry.images import PushedImage

URL_HINT = (
    "write dir:PATH (a folder, e.g. dir:./registry), oci://HOST[:PORT]/REPOSITORY, or "
    "postgresql://USER@HOST/DB?images=oci://HOST[:PORT]/REPOSITORY (metadata in PostgreSQL)"
)


class Registry(Protocol):
    """Storage for one registry. Implementations must make every write atomic."""

    @property
    def url(self) -> str:
        """The normalized URL; freshness state is keyed by it."""
        ...

    def read_metadata(self, name: str) -> bytes | None:
        """A metadata file (``3.snapshot.json``, ``timestamp.json`` …), None if absent."""
        ...

    def write_metadata(self, name: str, data: bytes) -> None:
        """Store a metadata file atomically. Versioned files are never replaced by other
        bytes; ``timestamp.json`` (the commit point) and pending files are."""
        ...

    def delete_metadata(self, name: str) -> None:
        """Remove a pending file (nothing else is ever deleted)."""
        ...

    def read_target(self, stored: str) -> bytes:
        """A target file by its stored path; TrustError if its bytes do not hash to the
        hash in its name, RegistryError if it is missing."""
        ...

    def write_target(self, stored: str, data: bytes) -> None:
        """Store a target file (idempotent, atomic)."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the registry's writer lock, exclusive across the processes (and, where the
        backend can, the hosts) that share it."""
        ...

    # artifact bytes: content-addressed, written before any metadata names them

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
        """Copy a Docker engine's image (by ID) in as ``name:tag``; its ref pins the digest.
        *source*: the same image as an OCI layout (``oci:PATH:TAG``), copied instead where
        given (it keeps the manifest's annotations, which an engine does not)."""
        ...

    def attach_attestations(
        self, image_ref: str, envelopes: Mapping[str, bytes], created: str
    ) -> Mapping[str, str]:
        """Attach signed attestations to a stored image where standard tools look for them
        (cosign's ``.att`` tag, OCI 1.1 referrers); what was written, by kind. Backends
        with no such place return an empty mapping."""
        ...

    def store_files(self, files: Sequence[DiskFile], name: str, tag: str) -> str | None:
        """Store the files of a file artifact (a VM's disk, kernel, initrd) by digest; the
        ref that finds them, or None where their digests alone do."""
        ...


# A factory takes the whole URL and the part after the scheme's separator.
BackendFactory = Callable[[str, str], Registry]


def _open_dir(url: str, rest: str) -> Registry:
    from bake.registry.dirstore import DirRegistry  # load only the backend in use

    if not rest:
        raise RegistryError(f"registry URL {url!r} names no folder", URL_HINT)
    return DirRegistry.at(rest)


def _open_oci(url: str, rest: str) -> Registry:
    from bake.registry.ocistore import OciRegistry  # load only the backend in use

    return OciRegistry.open(rest, url=url)


def _open_pg(url: str, rest: str) -> Registry:
    from bake.registry.pgstore import PgRegistry  # load only the backend in use

    return PgRegistry.open(url)


# scheme -> (separator after the scheme, factory)
BACKENDS: dict[str, tuple[str, BackendFactory]] = {
    "dir": (":", _open_dir),
    "oci": ("://", _open_oci),
    "postgresql": ("://", _open_pg),
    "postgres": ("://", _open_pg),
}


def open_registry(url: str) -> Registry:
    """Open the registry at ``url`` (``dir:PATH`` or ``oci://HOST/REPO``)."""
    for scheme, (separator, factory) in BACKENDS.items():
        prefix = scheme + separator
        if url.startswith(prefix):
            return factory(url, url[len(prefix) :])
    scheme, colon, _ = url.partition(":")
    what = f"scheme {scheme!r} is unknown" if colon and scheme else "it has no scheme"
    raise RegistryError(f"cannot open registry {hide_credentials(url)!r}: {what}", URL_HINT)
