"""Where a registry lives: the ``Registry`` protocol and the URL -> backend factory.

A backend stores two things: content-addressed blobs (image documents, attestation
envelopes) and one mutable object, the signed index envelope. Everything a backend
returns is untrusted until :mod:`bake.registry.client` has checked it, but a backend
must at least refuse a blob whose bytes do not match its digest (TrustError).

Backends form a plugin family (a Protocol + a dict): add one by adding an entry to
``BACKENDS``. ``dir:PATH`` is a folder; ``oci://HOST[:PORT]/PREFIX`` an OCI Distribution registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from bake.errors import RegistryError

if TYPE_CHECKING:
    from bake.infra.process import Runner
    from bake.registry.disks import DiskFile
    from bake.registry.images import PushedImage

URL_HINT = "write dir:PATH (a folder, e.g. dir:./registry) or oci://HOST[:PORT]/REPOSITORY"


class Registry(Protocol):
    """Storage for one registry. Implementations must make every write atomic."""

    @property
    def url(self) -> str:
        """The normalized URL; freshness state is keyed by it."""
        ...

    def read_index_envelope(self) -> dict[str, Any] | None:
        """The stored DSSE envelope of the index, or None if none was ever written."""
        ...

    def read_blob(self, digest: str) -> bytes:
        """The blob with ``digest``; TrustError if its bytes do not match, RegistryError if
        it is missing."""
        ...

    def write_blob(self, data: bytes) -> str:
        """Store ``data`` under its digest (idempotent, atomic); returns the digest."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the registry's writer lock, exclusive across processes and hosts that
        share the backend."""
        ...

    def write_index_envelope(self, envelope: Mapping[str, Any]) -> None:
        """Replace the index envelope atomically (readers see the old or the new one)."""
        ...

    # artifact bytes: content-addressed, written before the index names them

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


# scheme -> (separator after the scheme, factory)
BACKENDS: dict[str, tuple[str, BackendFactory]] = {
    "dir": (":", _open_dir),
    "oci": ("://", _open_oci),
}


def open_registry(url: str) -> Registry:
    """Open the registry at ``url`` (``dir:PATH`` or ``oci://HOST/REPO``)."""
    for scheme, (separator, factory) in BACKENDS.items():
        prefix = scheme + separator
        if url.startswith(prefix):
            return factory(url, url[len(prefix) :])
    scheme, colon, _ = url.partition(":")
    what = f"scheme {scheme!r} is unknown" if colon and scheme else "it has no scheme"
    raise RegistryError(f"cannot open registry {url!r}: {what}", URL_HINT)
