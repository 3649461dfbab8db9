"""Verified reads and locked, signed writes of a registry.

Reading (:func:`read`) trusts nothing the backend says until it is checked:

1. the index envelope must be signed by a trusted key (DSSE, ed25519);
2. it must not have expired (else a *frozen index*: someone may be hiding newer revocations);
3. its serial must not be lower than the highest this machine has seen for the registry
   (else a *replayed index*), kept in a small state file (:class:`FreshnessState`);
4. each image document is loaded only when asked for, and only if its bytes hash to the
   digest the signed index names.

Writing (:func:`transact`) takes the backend's lock, re-reads and verifies the current
index, applies a pure mutation, stores changed image documents as blobs, then signs and
stores the next index (serial + 1, a fresh expiry). Blobs first, index last: a writer
killed at any instant leaves the registry as it was before or after.

The clock is always passed in (``now``); nothing here reads it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bake.attest.digest import sha256_bytes
from bake.attest.dsse import sign_envelope, verify_envelope
from bake.attest.keys import PublicKey, SigningKey
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry.backend import Registry
from bake.registry.dirstore import atomic_write
from bake.registry.model import (
    INDEX_PAYLOAD_TYPE,
    Change,
    ImageDoc,
    Index,
    Release,
    add_build,
    decode_image_doc,
    decode_index,
    did_you_mean,
    encode_image_doc,
    encode_index,
    find_build,
    format_time,
    image_ref,
    new_image_doc,
    parse_time,
    validate_name,
)

DEFAULT_TTL = timedelta(days=30)
STATE_ENV = "BAKE_STATE_DIR"
STATE_FILE = "registries.json"
STATE_SCHEMA = "bake.state/v1"
TRUST_HINT = "pass the publisher's public key (.pub) as a trusted key"


# --------------------------------------------------------------------------- freshness


@dataclass(frozen=True)
class FreshnessState:
    """The highest index serial seen per registry URL, in a JSON file of this machine."""

    path: Path

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> FreshnessState:
        """``$BAKE_STATE_DIR/registries.json``, else ``~/.local/state/bake/registries.json``."""
        env = os.environ if environ is None else environ
        folder = env.get(STATE_ENV)
        base = Path(folder) if folder else Path.home() / ".local" / "state" / "bake"
        return cls(base / STATE_FILE)

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise BakeError(
                f"cannot read the registry state file {self.path}: {e}",
                "delete it to start afresh (replay protection restarts from the next read)",
            ) from e
        registries = data.get("registries") if isinstance(data, dict) else None
        if not isinstance(registries, dict):
            raise BakeError(
                f"the registry state file {self.path} is malformed",
                "delete it to start afresh (replay protection restarts from the next read)",
            )
        return registries

    def last_serial(self, url: str) -> int:
        return _serial_in(self._load(), url)

    def record(self, url: str, serial: int, *, at: datetime) -> None:
        """Remember ``serial`` for ``url`` if it is higher than what is stored (atomic,
        and safe against concurrent readers on this machine)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                self.path.with_name(self.path.name + ".lock"),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o644,
            )
        except OSError as e:
            raise BakeError(f"cannot write the registry state in {self.path.parent}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            registries = self._load()
            if _serial_in(registries, url) >= serial:
                return
            registries[url] = {"serial": serial, "seen": format_time(at)}
            data = {"schema": STATE_SCHEMA, "registries": registries}
            atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
        finally:
            os.close(fd)


def _serial_in(registries: Mapping[str, object], url: str) -> int:
    entry = registries.get(url)
    serial = entry.get("serial") if isinstance(entry, dict) else None
    return serial if isinstance(serial, int) else 0


# --------------------------------------------------------------------------- snapshot


def _no_blobs(digest: str) -> bytes:
    raise RegistryError(f"blob {digest} is not in this in-memory snapshot")


@dataclass(frozen=True)
class Snapshot:
    """One verified index and lazy, verified access to the image documents it names."""

    url: str
    index: Index
    load_blob: Callable[[str], bytes] = field(default=_no_blobs, repr=False, compare=False)
    cache: dict[str, ImageDoc] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        docs: Iterable[ImageDoc],
        *,
        url: str = "mem:",
        serial: int = 1,
        issued: str = "1970-01-01T00:00:00Z",
        expires: str = "9999-12-31T23:59:59Z",
    ) -> Snapshot:
        """A snapshot of in-memory documents (for pure code and its tests)."""
        cache = {doc.name: doc for doc in docs}
        images = {name: sha256_bytes(encode_image_doc(doc)) for name, doc in cache.items()}
        return cls(url, Index(serial, issued, expires, images), _no_blobs, cache)

    def names(self) -> list[str]:
        return sorted(self.index.images)

    def get(self, name: str) -> ImageDoc | None:
        """The verified document of ``name``, or None if the index does not name it."""
        cached = self.cache.get(name)
        if cached is not None:
            return cached
        digest = self.index.images.get(name)
        if digest is None:
            return None
        data = self.load_blob(digest)
        # The backend checks digests too; checking here keeps trust out of backends.
        if sha256_bytes(data) != digest:
            raise TrustError(
                f"the image document of {name!r} does not match its digest in the index",
                "the registry was damaged or tampered with",
            )
        doc = decode_image_doc(data, name=name)
        self.cache[name] = doc
        return doc

    def image(self, name: str) -> ImageDoc:
        """The verified document of ``name``; RegistryError with a did-you-mean if absent."""
        doc = self.get(name)
        if doc is None:
            raise RegistryError(
                f"no image named {name!r} in {self.url}",
                did_you_mean(name, self.index.images)
                or f"{len(self.index.images)} images are published; check the name",
            )
        return doc

    def images(self) -> dict[str, ImageDoc]:
        """Every image document (loads them all: for whole-registry operations only)."""
        return {name: self.image(name) for name in self.names()}


# --------------------------------------------------------------------------- reading


def read(
    registry: Registry,
    trusted: Sequence[PublicKey],
    *,
    state: FreshnessState | None,
    now: datetime,
) -> Snapshot:
    """Read and verify the registry's index. ``state=None`` skips replay protection."""
    return _read(registry, trusted, state=state, now=now, allow_expired=False)


def _read(
    registry: Registry,
    trusted: Sequence[PublicKey],
    *,
    state: FreshnessState | None,
    now: datetime,
    allow_expired: bool,
) -> Snapshot:
    if not trusted:
        raise TrustError(f"no trusted key to verify {registry.url} with", TRUST_HINT)
    envelope = registry.read_index_envelope()
    if envelope is None:
        raise RegistryError(f"{registry.url} has no index", "check the URL, or initialize the registry first")
    try:
        payload = verify_envelope(envelope, trusted, INDEX_PAYLOAD_TYPE)
    except TrustError as e:
        raise TrustError(f"the index of {registry.url} is not trusted: {e}", e.hint) from e
    index = decode_index(payload)
    if not allow_expired and parse_time(index.expires) <= now:
        raise TrustError(
            f"frozen index: the index of {registry.url} expired at {index.expires} (serial {index.serial})",
            "the publisher must refresh it (re-sign with a new expiry); until then newer "
            "revocations could be hidden from you",
        )
    if state is not None:
        last = state.last_serial(registry.url)
        if index.serial < last:
            raise TrustError(
                f"replayed index: {registry.url} serves serial {index.serial}, but serial "
                f"{last} was already seen here",
                "someone may be serving an old index to hide revocations; if the registry "
                f"was deliberately recreated, drop its entry from {state.path}",
            )
        if index.serial > last:
            state.record(registry.url, index.serial, at=now)
    return Snapshot(registry.url, index, registry.read_blob)


# --------------------------------------------------------------------------- writing


def _expiry(now: datetime, ttl: timedelta) -> str:
    if ttl <= timedelta(0):
        raise BakeError(f"the index lifetime must be positive, not {ttl}")
    return format_time(now + ttl)


def _store_index(registry: Registry, key: SigningKey, index: Index) -> None:
    envelope = sign_envelope(encode_index(index), key, payload_type=INDEX_PAYLOAD_TYPE)
    registry.write_index_envelope(envelope)


def init(
    registry: Registry,
    key: SigningKey,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    state: FreshnessState | None = None,
) -> Snapshot:
    """Create an empty registry (serial 1). Refuses one that already has an index: a
    registry is never silently reset, since readers would see a replayed serial."""
    expires = _expiry(now, ttl)
    with registry.locked():
        if registry.read_index_envelope() is not None:
            raise RegistryError(f"{registry.url} is already initialized")
        index = Index(serial=1, issued=format_time(now), expires=expires, images={})
        _store_index(registry, key, index)
    if state is not None:
        state.record(registry.url, index.serial, at=now)
    return Snapshot(registry.url, index, registry.read_blob)


Mutation = Callable[[Snapshot], Mapping[str, ImageDoc]]


def transact(
    registry: Registry,
    key: SigningKey,
    trusted: Sequence[PublicKey],
    mutate: Mutation,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    state: FreshnessState | None = None,
) -> Snapshot:
    """Apply ``mutate`` (current snapshot -> changed image documents by name) under the
    registry lock and sign the result. Returns the new snapshot; when nothing changed, the
    current one (no new serial). An expired index may be built on: the signer re-signs."""
    return _commit(registry, key, trusted, mutate, now=now, ttl=ttl, state=state, force=False)


def refresh(
    registry: Registry,
    key: SigningKey,
    trusted: Sequence[PublicKey],
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    state: FreshnessState | None = None,
) -> Snapshot:
    """Re-sign the index unchanged with serial + 1 and a new expiry (run it from CI well
    within the lifetime, so that readers never see a frozen index)."""
    return _commit(registry, key, trusted, lambda _: {}, now=now, ttl=ttl, state=state, force=True)


def _commit(
    registry: Registry,
    key: SigningKey,
    trusted: Sequence[PublicKey],
    mutate: Mutation,
    *,
    now: datetime,
    ttl: timedelta,
    state: FreshnessState | None,
    force: bool,
) -> Snapshot:
    expires = _expiry(now, ttl)
    with registry.locked():
        current = _read(registry, [*trusted, key.public], state=state, now=now, allow_expired=True)
        images = dict(current.index.images)
        written: dict[str, ImageDoc] = {}
        for name, doc in mutate(current).items():
            if doc.name != name:
                raise BakeError(f"internal error: document of {doc.name!r} given as {name!r}")
            validate_name(name)
            data = encode_image_doc(doc)
            if sha256_bytes(data) != images.get(name):
                images[name] = registry.write_blob(data)
            written[name] = doc
        if not force and images == dict(current.index.images):
            return current
        index = Index(
            serial=current.index.serial + 1,
            issued=format_time(now),
            expires=expires,
            images=images,
        )
        _store_index(registry, key, index)
    if state is not None:
        state.record(registry.url, index.serial, at=now)
    kept = {
        name: doc for name, doc in current.cache.items() if images.get(name) == current.index.images.get(name)
    }
    return Snapshot(registry.url, index, registry.read_blob, {**kept, **written})


def apply(
    registry: Registry,
    key: SigningKey,
    trusted: Sequence[PublicKey],
    plan: Callable[[Snapshot], Change],
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    state: FreshnessState | None = None,
) -> tuple[Snapshot, Change]:
    """Run a planner (e.g. :func:`bake.deploy.plan_promote`) in a transaction; returns the
    new snapshot and the change the planner made against the locked, current registry."""
    planned: list[Change] = []

    def mutate(snapshot: Snapshot) -> Mapping[str, ImageDoc]:
        planned.append(plan(snapshot))
        return planned[-1].docs

    snapshot = transact(registry, key, trusted, mutate, now=now, ttl=ttl, state=state)
    return snapshot, planned[-1]


@dataclass(frozen=True)
class Published:
    snapshot: Snapshot
    name: str
    version: str  # the full version, e.g. "1.4.0+2"
    created: bool  # False when an identical build was already published


def plan_publish(snapshot: Snapshot, release: Release) -> tuple[Change, str]:
    """Add ``release`` to its image document. Its parent, if any, must be a published,
    non-revoked build of this registry."""
    doc = snapshot.get(release.name) or new_image_doc(release.name)
    updated, version = add_build(doc, release)  # validates the release, parent included
    if release.parent is not None:
        parent_name, _, parent_version = release.parent.rpartition("@")
        find_build(snapshot.image(parent_name), parent_version)  # raises if unknown/revoked
    ref = image_ref(release.name, version)
    if updated is doc:
        return Change({}, (f"{ref} already published",)), version
    return Change({release.name: updated}, (f"published {ref}",)), version


def publish(
    registry: Registry,
    key: SigningKey,
    trusted: Sequence[PublicKey],
    release: Release,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    state: FreshnessState | None = None,
) -> Published:
    """Publish one release (idempotent: an identical republish changes nothing)."""
    versions: list[str] = []

    def plan(snapshot: Snapshot) -> Change:
        change, version = plan_publish(snapshot, release)
        versions.append(version)
        return change

    snapshot, change = apply(registry, key, trusted, plan, now=now, ttl=ttl, state=state)
    return Published(snapshot, release.name, versions[-1], created=bool(change.docs))
