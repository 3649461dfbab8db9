"""Reading a registry as a TUF client: python-tuf's own ``ngclient.Updater`` does it.

Trust starts from a root: a ``root.json`` the deployer was given, or (a shorthand) the
registry's first root checked against a public key the deployer trusts. The Updater then
follows the TUF client workflow — root rotations, timestamp, snapshot, targets, delegated
roles — refusing rollback, freeze, mix-and-match and fast-forward attacks as the TUF
specification says; nothing of that is written here. A fetcher hands the Updater the
registry's files (a folder, or an OCI registry), so bake and any other TUF client read the
same repository the same way.

The Updater keeps the newest metadata it trusted in a folder per registry and machine (its
rollback protection). That folder is a cache: lost, it only means a machine trusts what it
is served again, which lock files bound (see bake.deploy.lock); poisoned, nothing in it is
used without verification. Processes of one machine take turns on it (a lock), so one that
just saw a new timestamp never makes another look replayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Timestamp
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from bake.attest.keys import PublicKey
from bake.errors import RegistryError, TrustError
from bake.registry.backend import Registry
from bake.registry.layout import ROOT, TIMESTAMP, metadata_file, stored_target
from bake.registry.roles import AnyMetadata

METADATA_URL = "bake-registry://metadata/"
RETRY_PAUSES: tuple[float | None, ...] = (0.05, 0.2, 0.5, None)  # None: the last try
TIMESTAMP_FILE = "timestamp.json"
TARGETS_URL = "bake-registry://targets/"
STATE_ENV = "BAKE_STATE_DIR"
TRUST_HINT = "pass the registry's root.json, or a root public key (.pub), as a trusted key (--trust)"


def state_base(environ: Mapping[str, str]) -> Path:
    folder = environ.get(STATE_ENV)
    return Path(folder) if folder else Path.home() / ".local" / "state" / "bake"


def cache_dir(base: Path, url: str) -> Path:
    """The folder of the newest trusted metadata of ``url`` on this machine."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url).strip("_")[:60]
    return base / "tuf" / f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


class RegistryFetcher(FetcherInterface):
    """Serves the Updater a bake registry's metadata and target files."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _fetch(self, url: str) -> Iterator[bytes]:
        if url.startswith(METADATA_URL):
            name = unquote(url.removeprefix(METADATA_URL))
            data = self._metadata(name)
            if data is None:
                raise tuf_errors.DownloadHTTPError(f"{name} is not in {self.registry.url}", 404)
            return iter((data,))
        if url.startswith(TARGETS_URL):
            try:
                return iter((self.registry.read_target(unquote(url.removeprefix(TARGETS_URL))),))
            except RegistryError as e:
                raise tuf_errors.DownloadHTTPError(str(e), 404) from e
        raise tuf_errors.DownloadError(f"not a bake registry URL: {url}")

    def _metadata(self, name: str) -> bytes | None:
        """A metadata file, read again a few times when the read fails or the timestamp
        (which an initialized registry always has) is not there: a registry being written
        (a tag moving, a busy server) can fail one read. What is read is verified as ever;
        a file that stays unreadable is an error, a missing one (the next root) a 404."""
        for pause in RETRY_PAUSES:
            try:
                data = self.registry.read_metadata(name)
            except (RegistryError, OSError):
                if pause is None:
                    raise
            else:
                if data is not None or name != TIMESTAMP_FILE or pause is None:
                    return data
            time.sleep(pause or 0)
        return None  # not reached: the last pause is None


@dataclass(frozen=True)
class Versions:
    """What a client trusted, for lock files: they refuse anything older later."""

    root: int
    timestamp: int
    snapshot: int
    expires: str  # the timestamp's

    def to_json(self) -> dict[str, object]:
        return {"root": self.root, "timestamp": self.timestamp, "snapshot": self.snapshot}


def trusted_root(registry: Registry, trust: Sequence[Path], keys: Sequence[PublicKey] = ()) -> bytes:
    """The root metadata to start from: a root.json among ``trust``, or the registry's own
    first root when every given public key (files in ``trust``, or ``keys``) is one of its
    root keys (the shorthand)."""
    if not trust and not keys:
        raise TrustError(f"no trusted root for {registry.url}", TRUST_HINT)
    keys = list(keys)
    for path in trust:
        data = _read(path)
        if data.lstrip().startswith(b"{"):
            return _root_file(path, data)
        from bake.attest.keys import load_public_key

        keys.append(load_public_key(path))
    first = registry.read_metadata(metadata_file(ROOT, 1))
    if first is None:
        raise RegistryError(f"{registry.url} has no root metadata", "publish to it first, or check the URL")
    root = _parse(first, "the registry's 1.root.json")
    assert isinstance(root.signed, Root)
    root_keys = set(root.signed.roles[ROOT].keyids)
    strangers = [k.keyid for k in keys if k.keyid not in root_keys]
    if strangers:
        raise TrustError(
            f"{registry.url}: the key {strangers[0][:16]} you trust is not a root key of this registry",
            "pass the registry's root.json, or the public key of its root key",
        )
    try:
        root.verify_delegate(ROOT, root)
    except tuf_errors.UnsignedMetadataError as e:
        raise TrustError(f"{registry.url}: 1.root.json is not signed by its root keys: {e}") from e
    return first


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TrustError(f"cannot read trusted key or root {path}: {e.strerror or e}", TRUST_HINT) from e


def _root_file(path: Path, data: bytes) -> bytes:
    md = _parse(data, str(path))
    if not isinstance(md.signed, Root):
        raise TrustError(f"{path} is TUF {md.signed.type} metadata, not a root", TRUST_HINT)
    return data


def _parse(data: bytes, what: str) -> AnyMetadata:
    try:
        return Metadata.from_bytes(data)
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as e:
        raise TrustError(f"{what} is not TUF metadata: {e}") from e


class View:
    """A registry as the TUF client verified it: its targets by path, its versions."""

    def __init__(self, registry: Registry, updater: Updater, folder: Path) -> None:
        self.registry = registry
        self.updater = updater
        self.folder = folder

    def target(self, path: str) -> bytes | None:
        """The bytes of a target, checked against its signed length and hashes (None when
        no trusted metadata names it)."""
        with translated(self.registry.url):
            info = self.updater.get_targetinfo(path)
        if info is None:
            return None
        sha = info.hashes.get("sha256")
        if sha is None:
            raise TrustError(f"{path} in {self.registry.url} has no sha256 in its metadata")
        data = self.registry.read_target(stored_target(path, sha))
        try:
            info.verify_length_and_hashes(data)
        except tuf_errors.LengthOrHashMismatchError as e:
            raise TrustError(
                f"{path} in {self.registry.url} does not match its signed metadata: {e}",
                "the registry was damaged or tampered with",
            ) from e
        return data

    def metadata(self, role: str) -> AnyMetadata:
        """A role's metadata as the client trusts it: from the client's own verified state
        in memory (python-tuf's TrustedMetadataSet), never re-read from the cache folder."""
        trusted = self.updater._trusted_set  # python-tuf's verified state (the pinned version's)
        if role not in trusted:
            raise RegistryError(f"{role} metadata of {self.registry.url} was not loaded")
        md: AnyMetadata = Metadata(trusted[role])  # the verified content; its signatures were checked
        return md

    def versions(self) -> Versions:
        ts, snap, root = self.metadata(TIMESTAMP), self.metadata("snapshot"), self.metadata(ROOT)
        assert isinstance(ts.signed, Timestamp) and isinstance(snap.signed, Snapshot)
        return Versions(root.signed.version, ts.signed.version, snap.signed.version, _time(ts.signed.expires))


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """python-tuf's verdicts as bake's errors, saying what they mean for a deployer."""
    try:
        yield
    except tuf_errors.ExpiredMetadataError as e:
        raise TrustError(
            f"frozen metadata: {url}: {e}",
            "the publisher must refresh it (`bake refresh`); until then newer revocations "
            "could be hidden from you",
        ) from e
    except tuf_errors.BadVersionNumberError as e:
        raise TrustError(
            f"rollback refused: {url}: {e}",
            "someone may be serving old metadata to hide revocations or newer builds",
        ) from e
    except tuf_errors.UnsignedMetadataError as e:
        raise TrustError(f"{url}: metadata is not signed by the keys it must be: {e}", TRUST_HINT) from e
    except tuf_errors.RepositoryError as e:
        raise TrustError(f"{url}: the registry's metadata is not trusted: {e}") from e
    except tuf_errors.DownloadError as e:
        raise RegistryError(
            f"cannot read {url}: {e}", "check the URL and that the registry is reachable"
        ) from e
    except OSError as e:  # the Updater writing this machine's trust state (a full disk)
        raise RegistryError(
            f"cannot write this machine's trust state for {url}: {e.strerror or e}",
            f"free some disk space, or set {STATE_ENV} to a writable folder",
        ) from e


@contextlib.contextmanager
def open_view(registry: Registry, root: bytes, state: Path) -> Iterator[View]:
    """A refreshed, verified view of the registry (this machine's cache locked meanwhile)."""
    folder = cache_dir(state, registry.url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise RegistryError(
            f"cannot use the trust cache {folder}: {e.strerror or e}", f"set {STATE_ENV}"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with translated(registry.url):
            updater = Updater(
                str(folder),
                METADATA_URL,
                target_base_url=TARGETS_URL,
                fetcher=RegistryFetcher(registry),
                config=UpdaterConfig(max_delegations=64),
                bootstrap=root,
            )
            updater.refresh()
        yield View(registry, updater, folder)
    finally:
        os.close(fd)
