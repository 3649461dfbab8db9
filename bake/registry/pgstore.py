"""The ``postgresql://…?images=oci://HOST/PREFIX`` registry backend: TUF metadata in
PostgreSQL, image bytes in an OCI registry.

Why: many CI machines publish to one registry at once, and the OCI Distribution API has no
compare-and-swap. Here every change is one PostgreSQL transaction conditioned on the
repository version it read — the pattern of Terraform's ``pg`` backend:

- a writer holds a session-level advisory lock (``pg_advisory_lock``) for its change, so
  writers on every machine take turns and do no wasted work; PostgreSQL drops the lock
  when the writer's connection dies, so a killed publisher never leaves it held;
- the change's target files, metadata files and the new timestamp are buffered and written
  in ONE transaction whose last statement moves the head only if it is still the version
  the writer read (``UPDATE … WHERE version = read``); a writer that lost a race (its lock
  lost with its connection, or a client that does not lock) gets ``ConflictError`` and
  :func:`bake.registry.client.transact` retries on the new state;
- nothing is overwritten: ``N.ROLE.json`` and target files are immutable rows (a second
  write must carry the same bytes), the head keeps every timestamp version it had.

Tables (created on first use, in schema ``public`` of the database the URL names; one
database may hold many registries, told apart by ``repo``)::

    bake_heads(repo, version, data)          the current timestamp (the commit point)
    bake_timestamps(repo, version, data)     every timestamp version ever committed
    bake_metadata(repo, name, data)          N.ROLE.json, immutable
    bake_targets(repo, stored, data)         DIR/SHA256.NAME, immutable
    bake_pending(repo, name, data)           changes waiting for signatures
    bake_leases(repo, key, holder, expires)  who is baking which bake key (bake.app.lease)

The URL is libpq's (``postgresql://USER@HOST:PORT/DB``, ``?host=/socket/dir`` for a unix
socket; the password from PGPASSWORD or ~/.pgpass, never from the URL) plus two bake
parameters: ``images=oci://HOST[:PORT]/PREFIX`` (where container images and VM disks go;
writers need it) and ``repo=NAME`` (default ``bake``). Readers need read access only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

from bake.attest.digest import sha256_bytes
from bake.errors import ConflictError, RegistryError, TrustError
from bake.registry.layout import PENDING, TIMESTAMP, hash_of_stored

if TYPE_CHECKING:
    import psycopg

    from bake.infra.process import Runner
    from bake.registry.disks import DiskFile
    from bake.registry.images import PushedImage
    from bake.registry.ocistore import OciRegistry

TIMESTAMP_FILE = f"{TIMESTAMP}.json"
DEFAULT_REPO = "bake"
SCHEMA_LOCK = 0x62616B65  # "bake": serializes CREATE TABLE IF NOT EXISTS across clients

SCHEMA = """
CREATE TABLE IF NOT EXISTS bake_heads (
    repo text PRIMARY KEY, version bigint NOT NULL, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS bake_timestamps (
    repo text, version bigint, data bytea NOT NULL, PRIMARY KEY (repo, version));
CREATE TABLE IF NOT EXISTS bake_metadata (
    repo text, name text, data bytea NOT NULL, PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS bake_targets (
    repo text, stored text, data bytea NOT NULL, PRIMARY KEY (repo, stored));
CREATE TABLE IF NOT EXISTS bake_pending (
    repo text, name text, data bytea NOT NULL, PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS bake_leases (
    repo text, key text, holder text NOT NULL, expires timestamptz NOT NULL,
    PRIMARY KEY (repo, key));
"""


@dataclass(frozen=True)
class PgLocation:
    conninfo: str  # what psycopg gets: the URL without bake's parameters
    repo: str
    images: str | None  # oci://HOST[:PORT]/PREFIX
    url: str  # for people and state keys: no password

    @classmethod
    def parse(cls, url: str) -> PgLocation:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise RegistryError(f"{url!r} is not a postgresql:// URL")
        if parts.password:
            raise RegistryError(
                "the registry URL carries a password",
                "give it in PGPASSWORD or ~/.pgpass: URLs end up in logs, lock files and records",
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        repo = query.pop("repo", DEFAULT_REPO)
        images = query.pop("images", None)
        if not repo or not repo.replace("-", "").replace("_", "").isalnum():
            raise RegistryError(f"repo={repo!r} in {url!r}: use letters, digits, - and _")
        if images is not None and not images.startswith("oci://"):
            raise RegistryError(f"images={images!r} in {url!r}: give oci://HOST[:PORT]/PREFIX")
        base = f"{parts.scheme}://{parts.netloc}{parts.path}"  # urlunsplit drops an empty host's //
        conninfo = f"{base}?{urlencode(query)}" if query else base
        return cls(conninfo, repo, images, f"{base}?{parts.query}" if parts.query else base)


def _bytes(value: object) -> bytes:
    """A bytea column's value."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise RegistryError(f"internal error: the database returned {type(value).__name__} for bytes")


def _version(timestamp: bytes) -> int:
    try:
        return int(json.loads(timestamp)["signed"]["version"])
    except (ValueError, KeyError, TypeError) as e:
        raise RegistryError(f"a timestamp without a version in the registry's database ({e})") from None


def _connect(conninfo: str) -> psycopg.Connection[tuple[object, ...]]:
    import psycopg  # loaded only by this backend

    try:
        # UTF8 on our side even when the database is SQL_ASCII (a cluster made under the C
        # locale): psycopg would hand such text back as bytes
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10, client_encoding="UTF8")
    except psycopg.OperationalError as e:
        raise RegistryError(
            f"cannot connect to PostgreSQL ({e})".replace("\n", " "),
            "check the URL, that the server runs and that this user may connect",
        ) from None


@dataclass
class _Change:
    """What a writer stores, buffered until its commit."""

    base: int | None  # the head version read when the lock was taken
    targets: dict[str, bytes] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    pending: dict[str, bytes | None] = field(default_factory=dict)  # None: delete


class PgRegistry:
    """A bake registry whose metadata lives in PostgreSQL. Satisfies
    :class:`bake.registry.backend.Registry` (and :class:`bake.app.lease.Leases`). One
    instance per thread: it keeps one connection."""

    def __init__(self, location: PgLocation) -> None:
        self.location = location
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._change: _Change | None = None
        self._images: OciRegistry | None = None
        self._schema_ready = False  # set once this object has made sure the tables exist

    @classmethod
    def open(cls, url: str) -> PgRegistry:
        return cls(PgLocation.parse(url))

    @property
    def url(self) -> str:
        return self.location.url

    # --- connections --------------------------------------------------------------------

    def _db(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connected()
        return self._conn

    def _connected(self) -> psycopg.Connection[tuple[object, ...]]:
        """A new connection to a database whose tables exist (made by the first client;
        checked once per registry object, not on every lease beat)."""
        conn = _connect(self.location.conninfo)
        if not self._schema_ready:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)
            self._schema_ready = True
        return conn

    def _one(self, sql: str, *args: object) -> bytes | None:
        import psycopg

        try:
            row = self._db().execute(sql, (self.location.repo, *args)).fetchone()
        except psycopg.OperationalError as e:
            self.close()
            raise RegistryError(f"cannot read {self.url}: {e}".replace("\n", " ")) from None
        return None if row is None else _bytes(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:  # registries are opened per command, not per process
        with contextlib.suppress(Exception):
            self.close()

    # --- metadata -----------------------------------------------------------------------

    def read_metadata(self, name: str) -> bytes | None:
        if self._change is not None:
            if name in self._change.metadata:
                return self._change.metadata[name]
            if name in self._change.pending:
                return self._change.pending[name]
        if name == TIMESTAMP_FILE:
            return self._one("SELECT data FROM bake_heads WHERE repo = %s")
        if name.startswith(PENDING):
            return self._one("SELECT data FROM bake_pending WHERE repo = %s AND name = %s", name)
        return self._one("SELECT data FROM bake_metadata WHERE repo = %s AND name = %s", name)

    def write_metadata(self, name: str, data: bytes) -> None:
        change = self._held("write metadata")
        if name.startswith(PENDING):
            change.pending[name] = data
        elif name == TIMESTAMP_FILE:
            self._commit(change, data)
        else:
            change.metadata[name] = data

    def delete_metadata(self, name: str) -> None:
        if not name.startswith(PENDING):
            raise RegistryError(f"{name} is never deleted from {self.url}")
        self._held("delete metadata").pending[name] = None

    # --- targets ------------------------------------------------------------------------

    def read_target(self, stored: str) -> bytes:
        data = self._change.targets.get(stored) if self._change is not None else None
        if data is None:
            data = self._one("SELECT data FROM bake_targets WHERE repo = %s AND stored = %s", stored)
        if data is None:
            raise RegistryError(f"{stored} is missing from {self.url}")
        actual = sha256_bytes(data)
        if actual != "sha256:" + hash_of_stored(stored):
            raise TrustError(
                f"{stored} in {self.url} has the content of {actual}",
                "the registry's database was changed outside bake; restore it from a backup",
            )
        return data

    def write_target(self, stored: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != hash_of_stored(stored):
            raise RegistryError(f"internal error: the bytes of {stored} do not match its name")
        self._held("write a target").targets[stored] = data

    # --- the writer's lock and its one transaction --------------------------------------

    def _held(self, what: str) -> _Change:
        if self._change is None:
            raise RegistryError(f"internal error: cannot {what} in {self.url} without its lock")
        return self._change

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._change is not None:
            raise RegistryError(f"internal error: {self.url} is locked already")
        import psycopg

        db = self._db()
        key = int.from_bytes(hashlib.sha256(self.location.repo.encode()).digest()[:8], "big", signed=True)
        try:
            db.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg.OperationalError as e:
            self.close()
            raise RegistryError(f"cannot lock {self.url}: {e}".replace("\n", " ")) from None
        try:
            row = db.execute(
                "SELECT version FROM bake_heads WHERE repo = %s", (self.location.repo,)
            ).fetchone()
            self._change = _Change(base=None if row is None else int(row[0]))  # type: ignore[call-overload]
            yield
            if self._change.pending or self._change.targets or self._change.metadata:
                self._flush(self._change, None)  # a change without a new timestamp (pending only)
        finally:
            self._change = None
            with contextlib.suppress(Exception):  # a dead connection has dropped the lock already
                db.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _commit(self, change: _Change, timestamp: bytes) -> None:
        version = _version(timestamp)
        self._flush(change, (version, timestamp))
        change.base = version
        change.targets.clear()
        change.metadata.clear()
        change.pending.clear()

    def _flush(self, change: _Change, head: tuple[int, bytes] | None) -> None:
        import psycopg

        repo, db = self.location.repo, self._db()
        try:
            with db.transaction():
                for stored, data in change.targets.items():
                    self._insert_once(db, "bake_targets", "stored", stored, data)
                for name, data in change.metadata.items():
                    self._insert_once(db, "bake_metadata", "name", name, data)
                for name, pending in change.pending.items():
                    if pending is None:
                        db.execute("DELETE FROM bake_pending WHERE repo = %s AND name = %s", (repo, name))
                    else:
                        db.execute(
                            "INSERT INTO bake_pending (repo, name, data) VALUES (%s, %s, %s) "
                            "ON CONFLICT (repo, name) DO UPDATE SET data = EXCLUDED.data",
                            (repo, name, pending),
                        )
                if head is not None:
                    self._move_head(db, change.base, *head)
        except psycopg.OperationalError as e:
            # the connection died, and the advisory lock with it: nothing was committed, and
            # another writer may have gone ahead; the change is made again on the new state
            self.close()
            raise ConflictError(
                f"the change to {self.url} was not stored: {e}".replace("\n", " "),
                "nothing of it was committed; it is retried on the registry's current state",
            ) from None

    def _insert_once(
        self, db: psycopg.Connection[tuple[object, ...]], table: str, col: str, name: str, data: bytes
    ) -> None:
        repo = self.location.repo
        db.execute(
            f"INSERT INTO {table} (repo, {col}, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",  # noqa: S608 - fixed names
            (repo, name, data),
        )
        sql = f"SELECT data FROM {table} WHERE repo = %s AND {col} = %s"  # noqa: S608 - fixed names
        row = db.execute(sql, (repo, name)).fetchone()
        if row is None or _bytes(row[0]) != data:
            raise ConflictError(
                f"{name} in {self.url} was written by another publisher with other bytes",
                "another writer changed the registry; the change is retried on its state",
            )

    def _move_head(
        self, db: psycopg.Connection[tuple[object, ...]], base: int | None, version: int, data: bytes
    ) -> None:
        repo = self.location.repo
        if base is None:
            moved = db.execute(
                "INSERT INTO bake_heads (repo, version, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (repo, version, data),
            ).rowcount
        else:
            moved = db.execute(
                "UPDATE bake_heads SET version = %s, data = %s WHERE repo = %s AND version = %s",
                (version, data, repo, base),
            ).rowcount
        if moved != 1:
            raise ConflictError(
                f"{self.url} moved on while this change was made (it read timestamp version {base})",
                "another writer committed first; the change is retried on its state",
            )
        db.execute(
            "INSERT INTO bake_timestamps (repo, version, data) VALUES (%s, %s, %s)", (repo, version, data)
        )

    # --- leases (bake.app.lease) --------------------------------------------------------

    def acquire(self, key: str, holder: str, seconds: float) -> str | None:
        """Take the lease of ``key`` for ``seconds`` (or renew ours): None when held by
        ``holder`` now, else who holds it. Expiry is the database's clock, never a runner's."""
        with contextlib.closing(self._connected()) as db:
            row = db.execute(
                "INSERT INTO bake_leases (repo, key, holder, expires) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (repo, key) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires "
                "WHERE bake_leases.expires < now() OR bake_leases.holder = EXCLUDED.holder "
                "RETURNING holder",
                (self.location.repo, key, holder, seconds),
            ).fetchone()
            if row is not None:
                return None
            other = db.execute(
                "SELECT holder FROM bake_leases WHERE repo = %s AND key = %s", (self.location.repo, key)
            ).fetchone()
            return str(other[0]) if other else "?"

    def release(self, key: str, holder: str) -> None:
        with contextlib.closing(self._connected()) as db:
            db.execute(
                "DELETE FROM bake_leases WHERE repo = %s AND key = %s AND holder = %s",
                (self.location.repo, key, holder),
            )

    # --- artifact bytes: in the OCI registry --------------------------------------------

    def _oci(self) -> OciRegistry:
        if self._images is None:
            if self.location.images is None:
                raise RegistryError(
                    f"{self.url} names no registry for image bytes",
                    "add images=oci://HOST[:PORT]/PREFIX to the registry URL",
                )
            from bake.registry.ocistore import OciRegistry

            self._images = OciRegistry.open(
                self.location.images.removeprefix("oci://"), url=self.location.images
            )
        return self._images

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
        return self._oci().store_image(runner, docker_host, image_id, name, tag, source=source)

    def attach_attestations(
        self, image_ref: str, envelopes: Mapping[str, bytes], created: str
    ) -> Mapping[str, str]:
        return self._oci().attach_attestations(image_ref, envelopes, created)

    def store_files(self, files: Sequence[DiskFile], name: str, tag: str) -> str | None:
        return self._oci().store_files(files, name, tag)
