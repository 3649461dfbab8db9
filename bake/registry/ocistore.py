"""The ``oci://HOST[:PORT]/PREFIX`` registry backend: an OCI Distribution registry.

The TUF repository (bake.registry.layout) lives in one repository, ``PREFIX/bake-meta``::

    blob <digest>           target files (image documents, attestations, …): a target
                            stored as ``DIR/SHA256.BASE`` is the blob ``sha256:SHA256``
    tag  sha256-<hex>       per blob: an artifact manifest whose single layer is that blob
    tag  N.ROLE.json        per metadata file: an artifact manifest (artifactType
                            application/vnd.bake.tuf-metadata.v1, empty config) whose
                            single layer is the file; ``timestamp.json`` is retagged on
                            every change (the commit point)

Why a tag per blob: registries garbage-collect blobs that no manifest refers to, and with
``--delete-untagged`` the untagged manifests too. Listing every blob in one manifest would
grow that manifest with all of history; a tag per blob costs one small manifest PUT per
new blob, is idempotent, and keeps each image document and attestation reachable for as
long as the registry exists. Metadata versions keep their tags (consistent snapshots: a
client mid-update still finds the versions it was told about).

Writers: the Distribution API has no compare-and-swap. :meth:`OciRegistry.locked` takes an
flock on a local file keyed by the URL (under ``$BAKE_STATE_DIR/locks``, else
``~/.local/state/bake/locks``), so publishers on one machine take turns, and
:meth:`OciRegistry.write_metadata` refuses ("concurrent publish") when the
``timestamp.json`` tag no longer names the manifest read under that lock. The check narrows but cannot close
the window before the PUT: publishers on different machines must serialize themselves
(CI runs one publish job at a time).

Checked against Debian's docker-registry 2.8.2 (tests/integration/test_oci_registry.py): it
stores these manifests verbatim (``artifactType`` included; it would take a custom config
media type too, but the empty config is what OCI 1.1 prescribes and other registries
accept), and ``garbage-collect --delete-untagged`` keeps every tagged blob.

Transport: plain HTTP for loopback hosts, HTTPS otherwise. Credentials come from
``BAKE_REGISTRY_USER``/``BAKE_REGISTRY_PASSWORD`` and are sent as Basic or exchanged for a
Bearer token, whichever the registry's challenge asks for; they are never logged and
never follow a redirect (registries redirect blob reads to their storage).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from bake.attest.digest import CHUNK, canonical_json, is_digest, sha256_bytes
from bake.errors import ConflictError, RegistryError, TrustError
from bake.registry.layout import hash_of_stored
from bake.registry.model import validate_name
from bake.textsafe import REDACTED

if TYPE_CHECKING:
    from bake.infra.process import Runner
    from bake.registry.disks import DiskFile
    from bake.registry.images import PushedImage

META_REPOSITORY = "bake-meta"
TIMESTAMP_FILE = "timestamp.json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
METADATA_ARTIFACT_TYPE = "application/vnd.bake.tuf-metadata.v1"
TUF_MEDIA_TYPE = "application/vnd.tuf.metadata+json"
BLOB_ARTIFACT_TYPE = "application/vnd.bake.blob.v1"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
MANIFEST_ACCEPT = ", ".join(
    (
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
USER_ENV = "BAKE_REGISTRY_USER"
PASSWORD_ENV = "BAKE_REGISTRY_PASSWORD"  # noqa: S105 - the name of a variable, not a password
STATE_ENV = "BAKE_STATE_DIR"
TIMEOUT = 60.0
MAX_MANIFEST = 4 << 20  # what registries themselves accept
MAX_META_BLOB = 64 << 20  # image documents and envelopes are KiB; refuse a hostile flood
UPLOAD_CHUNK = 32 << 20  # one PATCH per chunk: fits proxies' request size limits
EMPTY_JSON = b"{}"
AUTH_HINT = f"set {USER_ENV} and {PASSWORD_ENV} to credentials allowed to pull and push"
REACH_HINT = "check the URL and that the registry runs (locally: docker-registry serve CONFIG)"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


# --------------------------------------------------------------------------- locations


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class OciLocation:
    """``HOST[:PORT]`` and a repository path below it (``PREFIX``, may be empty)."""

    host: str  # as in a reference: "127.0.0.1:5000", "[::1]:5000", "registry.example.org"
    prefix: str

    @classmethod
    def parse(cls, text: str, url: str | None = None) -> OciLocation:
        """Parse ``HOST[:PORT][/PATH]``; errors name ``url`` (default: ``text``), never with
        a password someone put into it."""
        shown = url or text
        if "@" in text:  # userinfo (no host or repository has an @): never echoed back
            shown = f"oci://{REDACTED}@{text.rpartition('@')[2]}"
        host, _, prefix = text.strip().rstrip("/").partition("/")
        if not host or "@" in text:
            what = "credentials (use the environment instead)" if "@" in text else "no host"
            raise RegistryError(
                f"registry URL {shown!r} has {what}",
                f"write oci://HOST[:PORT]/PREFIX; credentials come from {USER_ENV}/{PASSWORD_ENV}",
            )
        try:
            split = urllib.parse.urlsplit("//" + host)
            split.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            raise RegistryError(f"registry URL {shown!r} has a malformed host or port {host!r}") from None
        if not split.hostname:
            raise RegistryError(f"registry URL {shown!r} has no host")
        for component in prefix.split("/") if prefix else ():
            if not _COMPONENT.fullmatch(component):
                raise RegistryError(
                    f"registry URL {shown!r}: {component!r} is not a valid repository path component",
                    "use lowercase letters and digits, separated by '.', '_', '__' or '-'",
                )
        return cls(host.lower(), prefix)

    @property
    def hostname(self) -> str:
        return urllib.parse.urlsplit("//" + self.host).hostname or self.host

    @property
    def insecure(self) -> bool:
        """Plain HTTP (and no TLS verification for tools): loopback registries only."""
        return is_loopback(self.hostname)

    @property
    def base(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"

    @property
    def url(self) -> str:
        return f"oci://{self.host}/{self.prefix}" if self.prefix else f"oci://{self.host}"

    def repository(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name


def lock_name(url: str) -> str:
    """A file name for the writer lock of ``url``: readable, and unique by a hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url).strip("_")[:80]
    return f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock"


def lock_dir(environ: Mapping[str, str]) -> Path:
    folder = environ.get(STATE_ENV)
    base = Path(folder) if folder else Path.home() / ".local" / "state" / "bake"
    return base / "locks"


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


EMPTY_CONFIG = Descriptor(OCI_EMPTY, sha256_bytes(EMPTY_JSON), len(EMPTY_JSON))


def artifact_manifest(
    artifact_type: str, layers: Sequence[Descriptor], annotations: Mapping[str, str] | None = None
) -> bytes:
    """An OCI 1.1 artifact manifest: ``artifactType``, the empty config, ``layers``."""
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


def metadata_tag(name: str) -> str:
    """The tag of a metadata file: its name (``3.snapshot.json``) is a valid tag."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", name):
        raise RegistryError(f"{name!r} is not a metadata file name")
    return name


def blob_manifest(blob: Descriptor) -> bytes:
    return artifact_manifest(BLOB_ARTIFACT_TYPE, [blob])


def blob_tag(digest: str) -> str:
    """The tag that keeps ``digest`` reachable: ``sha256-<hex>`` (a digest is no tag)."""
    if not is_digest(digest):
        raise RegistryError(f"{digest!r} is not a blob digest", "expected sha256: and 64 lowercase hex")
    return digest.replace(":", "-")


def parse_manifest(data: bytes, what: str) -> tuple[str | None, list[Descriptor]]:
    """(artifact type, layers) of an untrusted image manifest; TrustError if malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TrustError(f"{what} is not valid JSON", "the registry was damaged or tampered with") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("mediaType") != OCI_MANIFEST or not isinstance(layers, list):
        raise TrustError(f"{what} is not an OCI image manifest", "the registry was damaged or tampered with")
    out = []
    for i, layer in enumerate(layers):
        ok = isinstance(layer, dict) and is_digest(layer.get("digest"))
        size = layer.get("size") if ok else None
        media_type = layer.get("mediaType") if ok else None
        if not isinstance(size, int) or size < 0 or not isinstance(media_type, str):
            raise TrustError(f"{what}: layers[{i}] is not a valid descriptor")
        out.append(Descriptor(media_type, layer["digest"], size))
    config = doc.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    artifact = doc.get("artifactType") or config_type
    return (artifact if isinstance(artifact, str) else None), out


# --------------------------------------------------------------------------- HTTP


class Readable(Protocol):
    def read(self, amt: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


@dataclass
class Reply:
    """An open HTTP response (error statuses included). Close it: use ``with``."""

    status: int
    headers: Message
    stream: Readable

    def read(self, limit: int) -> bytes:
        """The whole body, refusing one longer than ``limit`` (a small document was due)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := self.stream.read(min(CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise RegistryError(
                    f"the registry sent more than {limit} bytes where a small document was due"
                )
        return b"".join(chunks)

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Sends a request and returns the response whatever its status; raises only when the
# registry cannot be reached. Injected so tests speak to an in-memory registry.
Send = Callable[[urllib.request.Request], Reply]


def urllib_send(*, direct: bool, timeout: float = TIMEOUT) -> Send:
    """The real transport; ``direct`` bypasses proxies (for loopback registries)."""
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if direct else []))

    def send(request: urllib.request.Request) -> Reply:
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.headers, e)
        return Reply(response.status, response.headers, response)

    return send


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials | None:
        user = environ.get(USER_ENV)
        return cls(user, environ.get(PASSWORD_ENV, "")) if user else None

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` -> ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


@contextlib.contextmanager
def _reaching(base: str) -> Iterator[None]:
    try:
        yield
    except (OSError, HTTPException) as e:  # URLError, timeouts, resets are OSErrors
        reason = getattr(e, "reason", None) or e
        raise RegistryError(f"cannot reach the registry at {base}: {reason}", REACH_HINT) from e


def _error_text(reply: Reply) -> str:
    try:
        doc = json.loads(reply.read(64 << 10))
        errors = doc.get("errors") if isinstance(doc, dict) else None
        first = errors[0] if isinstance(errors, list) and errors else {}
        return " ".join(
            str(first.get(k)) for k in ("code", "message") if isinstance(first, dict) and k in first
        )
    except (ValueError, RegistryError, OSError, HTTPException):
        return ""


class Distribution:
    """A client of the OCI Distribution API of one registry host.

    Holds per-host authorization learned from challenges, so not thread-safe: one per
    thread."""

    def __init__(self, location: OciLocation, credentials: Credentials | None, send: Send) -> None:
        self.location = location
        self._credentials = credentials
        self._send = send
        self._authorization: dict[str, str] = {}  # repository -> header value

    def url(self, repository: str, path: str) -> str:
        return f"{self.location.base}/v2/{repository}/{path}"

    def request(
        self,
        method: str,
        repository: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
    ) -> Reply:
        """Send, answering one authentication challenge (bodies that can be resent only)."""
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise RegistryError(f"{self.location.base} sent the client to {url!r}, which is no http(s) URL")
        for attempt in (1, 2):
            headers_ = dict(headers or {})
            request = urllib.request.Request(url, data=body, method=method, headers=headers_)  # noqa: S310 - http(s), checked
            auth = self._authorization.get(repository)
            if auth and urllib.parse.urlsplit(url).netloc.lower() == self.location.host:
                request.add_unredirected_header("Authorization", auth)
            with _reaching(self.location.base):
                reply = self._send(request)
            resendable = body is None or isinstance(body, bytes)
            if reply.status != 401 or attempt == 2 or not resendable:
                return reply
            challenge = reply.headers.get("WWW-Authenticate", "")
            reply.close()
            self._authorization[repository] = self._answer(challenge, repository)
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, challenge: str, repository: str) -> str:
        scheme, params = parse_challenge(challenge)
        creds = self._credentials
        if scheme == "basic":
            if creds is None:
                raise RegistryError(f"{self.location.base} requires credentials", AUTH_HINT)
            return creds.basic()
        realm = params.get("realm", "")
        if scheme != "bearer" or not realm:
            raise RegistryError(f"{self.location.base} asks for unsupported authentication {scheme!r}")
        realm_parts = urllib.parse.urlsplit(realm)
        if realm_parts.scheme not in ("http", "https"):
            raise RegistryError(f"{self.location.base} names a token server that is no http(s) URL: {realm}")
        if realm_parts.scheme != "https" and not is_loopback(realm_parts.hostname or ""):
            creds = None  # never send a password in the clear to a token server
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{repository}:pull,push")
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")  # noqa: S310 - http(s), checked
        if creds is not None:
            request.add_unredirected_header("Authorization", creds.basic())
        with _reaching(realm), self._send(request) as reply:
            if reply.status != 200:
                raise RegistryError(
                    f"the token server {realm} refused access to {repository} (HTTP {reply.status})",
                    AUTH_HINT,
                )
            try:
                doc = json.loads(reply.read(1 << 20))
            except (ValueError, UnicodeDecodeError):
                doc = None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server {realm} sent no token")
        return f"Bearer {token}"

    def fail(self, reply: Reply, what: str) -> RegistryError:
        detail = _error_text(reply)
        hint = AUTH_HINT if reply.status in (401, 403) else None
        return RegistryError(f"{what}: HTTP {reply.status}" + (f" {detail}" if detail else ""), hint)

    # -- blobs

    def has_blob(self, repository: str, digest: str) -> bool:
        with self.request("HEAD", repository, self.url(repository, f"blobs/{digest}")) as reply:
            if reply.status in (200, 404):
                return reply.status == 200
            raise self.fail(reply, f"cannot look for blob {digest} in {self.location.host}/{repository}")

    def read_blob(self, repository: str, digest: str, limit: int = MAX_META_BLOB) -> bytes:
        """The bytes of a small blob, checked against ``digest``."""
        chunks: list[bytes] = []
        self.stream_blob(repository, digest, chunks.append, limit=limit)
        return b"".join(chunks)

    def stream_blob(
        self, repository: str, digest: str, sink: Callable[[bytes], object], *, limit: int | None = None
    ) -> int:
        """Pass the blob to ``sink`` in chunks; TrustError at the end if it does not hash to
        ``digest`` (so ``sink`` must not commit anything before this returns)."""
        where = f"{self.location.host}/{repository}"
        with self.request("GET", repository, self.url(repository, f"blobs/{digest}")) as reply:
            if reply.status == 404:
                raise RegistryError(
                    f"blob {digest} is missing from {where}",
                    "the registry is incomplete (garbage-collected or a partial copy?)",
                )
            if reply.status != 200:
                raise self.fail(reply, f"cannot read blob {digest} from {where}")
            h = hashlib.sha256()
            size = 0
            with _reaching(self.location.base):
                while chunk := reply.stream.read(CHUNK):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise RegistryError(f"blob {digest} in {where} is larger than {limit} bytes")
                    h.update(chunk)
                    sink(chunk)
        actual = f"sha256:{h.hexdigest()}"
        if actual != digest:
            raise TrustError(
                f"blob {digest} in {where} has the content of {actual}",
                "the registry was damaged or tampered with",
            )
        return size

    def _start_upload(self, repository: str) -> str:
        url = self.url(repository, "blobs/uploads/")
        with self.request("POST", repository, url, headers={"Content-Length": "0"}, body=b"") as reply:
            location = reply.headers.get("Location")
            if reply.status != 202 or not location:
                raise self.fail(reply, f"cannot start a blob upload to {self.location.host}/{repository}")
        return urllib.parse.urljoin(url, location)

    def _finish_upload(self, repository: str, location: str, digest: str, data: bytes) -> None:
        sep = "&" if urllib.parse.urlsplit(location).query else "?"
        url = f"{location}{sep}{urllib.parse.urlencode({'digest': digest})}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        with self.request("PUT", repository, url, headers=headers, body=data) as reply:
            if reply.status != 201:
                raise self.fail(reply, f"cannot store blob {digest} in {self.location.host}/{repository}")

    def push_blob(self, repository: str, data: bytes) -> Descriptor:
        """Upload ``data`` unless the registry has it (HEAD first); monolithic PUT."""
        digest = sha256_bytes(data)
        if not self.has_blob(repository, digest):
            self._finish_upload(repository, self._start_upload(repository), digest, data)
        return Descriptor("application/octet-stream", digest, len(data))

    def push_file(self, repository: str, path: Path, digest: str, chunk: int = UPLOAD_CHUNK) -> int:
        """Upload the file at ``path`` (known to hash to ``digest``) in PATCH chunks read
        1 MiB at a time: memory stays flat. The registry checks the digest on commit."""
        size = path.stat().st_size
        if self.has_blob(repository, digest):
            return size
        location = self._start_upload(repository)  # also settles authentication
        with path.open("rb") as f:
            for start in range(0, size, chunk):
                n = min(chunk, size - start)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(n),
                    "Content-Range": f"{start}-{start + n - 1}",
                }
                body = _file_window(f, n)
                with self.request("PATCH", repository, location, headers=headers, body=body) as reply:
                    next_location = reply.headers.get("Location")
                    if reply.status != 202 or not next_location:
                        raise self.fail(
                            reply, f"upload of {path} to {self.location.host}/{repository} failed"
                        )
                location = urllib.parse.urljoin(location, next_location)
        self._finish_upload(repository, location, digest, b"")
        return size

    # -- manifests

    def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        digest = sha256_bytes(data)
        url = self.url(repository, f"manifests/{reference}")
        with self.request("PUT", repository, url, headers={"Content-Type": media_type}, body=data) as reply:
            if reply.status != 201:
                raise self.fail(reply, f"cannot store manifest {self.location.host}/{repository}:{reference}")
            stored = reply.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise RegistryError(f"the registry stored manifest {digest} as {stored}")
        return digest

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """(bytes, their digest), or None if there is no such manifest."""
        url = self.url(repository, f"manifests/{reference}")
        with self.request("GET", repository, url, headers={"Accept": MANIFEST_ACCEPT}) as reply:
            if reply.status == 404:
                return None
            if reply.status != 200:
                raise self.fail(reply, f"cannot read manifest {self.location.host}/{repository}:{reference}")
            with _reaching(self.location.base):
                data = reply.read(MAX_MANIFEST)
        digest = sha256_bytes(data)
        if is_digest(reference) and digest != reference:
            raise TrustError(f"manifest {reference} in {self.location.host}/{repository} hashes to {digest}")
        return data, digest

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest ``reference`` resolves to now (HEAD; GET if no digest header)."""
        url = self.url(repository, f"manifests/{reference}")
        with self.request("HEAD", repository, url, headers={"Accept": MANIFEST_ACCEPT}) as reply:
            if reply.status == 404:
                return None
            if reply.status != 200:
                raise self.fail(reply, f"cannot look up {self.location.host}/{repository}:{reference}")
            stated = reply.headers.get("Docker-Content-Digest")
        if is_digest(stated):
            return stated
        got = self.get_manifest(repository, reference)
        return got[1] if got else None


def _file_window(f: BinaryIO, length: int) -> Iterator[bytes]:
    """The next ``length`` bytes of ``f``, 1 MiB at a time."""
    left = length
    while left:
        data = f.read(min(CHUNK, left))
        if not data:
            raise RegistryError(f"{f.name} shrank while it was being uploaded")
        left -= len(data)
        yield data


def distribution(
    location: OciLocation, environ: Mapping[str, str] | None = None, send: Send | None = None
) -> Distribution:
    """A client for ``location`` with credentials from ``environ`` (default: os.environ)."""
    env = os.environ if environ is None else environ
    return Distribution(location, Credentials.from_env(env), send or urllib_send(direct=location.insecure))


# --------------------------------------------------------------------------- the backend


class OciRegistry:
    """A bake registry in an OCI registry. Satisfies :class:`bake.registry.backend.Registry`.

    It remembers, while :meth:`locked` is held, which timestamp manifest it read: one
    instance per publisher (and per thread)."""

    def __init__(self, location: OciLocation, client: Distribution, locks: Path) -> None:
        self.location = location
        self.client = client
        self.repository = location.repository(META_REPOSITORY)
        self._locks = locks
        self._held = False
        self._read_under_lock = False
        self._seen_timestamp: str | None = None
        self._known_blobs: set[str] = set()

    @classmethod
    def open(
        cls,
        text: str,
        *,
        url: str | None = None,
        environ: Mapping[str, str] | None = None,
        send: Send | None = None,
    ) -> OciRegistry:
        """The registry at ``HOST[:PORT]/PREFIX`` (``text``; ``url`` for messages)."""
        env = os.environ if environ is None else environ
        location = OciLocation.parse(text, url)
        return cls(location, distribution(location, env, send), lock_dir(env))

    @property
    def url(self) -> str:
        return self.location.url

    def read_metadata(self, name: str) -> bytes | None:
        got = self.client.get_manifest(self.repository, metadata_tag(name))
        if name == TIMESTAMP_FILE and self._held:
            self._read_under_lock = True
            self._seen_timestamp = got[1] if got else None
        if got is None:
            return None
        data, digest = got
        what = f"the manifest {digest} of {name} in {self.url}"
        artifact, layers = parse_manifest(data, what)
        if artifact != METADATA_ARTIFACT_TYPE or len(layers) != 1:
            raise TrustError(
                f"{what} is not bake metadata (artifact type {artifact!r}, {len(layers)} layers)",
                f"something else was pushed as the {name!r} tag of this repository",
            )
        content = self.read_blob(layers[0].digest)
        return content or None  # an empty layer: a withdrawn pending change

    def write_metadata(self, name: str, data: bytes) -> None:
        tag = metadata_tag(name)
        blob = self._push(data)
        self._push(EMPTY_JSON)
        layer = Descriptor(TUF_MEDIA_TYPE, blob.digest, blob.size)
        manifest = artifact_manifest(METADATA_ARTIFACT_TYPE, [layer])
        if name == TIMESTAMP_FILE:
            # the commit point: only under the lock, and only over the timestamp read there
            if not (self._held and self._read_under_lock):
                raise RegistryError(
                    f"internal error: {self.url}: the timestamp may only be written under locked(), "
                    "after reading it there (the registry has no compare-and-swap)"
                )
            current = self.client.manifest_digest(self.repository, tag)
            if current != self._seen_timestamp:
                raise ConflictError(
                    f"concurrent publish: the timestamp of {self.url} changed to {current or 'nothing'} "
                    f"while this publisher held its lock (it read {self._seen_timestamp or 'none'})",
                    "publishers on different machines share no lock: let one publish at a time "
                    "(CI serializes its publish jobs), then retry",
                )
            self._seen_timestamp = self.client.put_manifest(self.repository, tag, manifest)
            return
        self.client.put_manifest(self.repository, tag, manifest)

    def delete_metadata(self, name: str) -> None:
        self.write_metadata(name, b"")  # the Distribution API may not allow deletes: withdraw

    def read_target(self, stored: str) -> bytes:
        return self.read_blob("sha256:" + hash_of_stored(stored))

    def write_target(self, stored: str, data: bytes) -> None:
        if self.write_blob(data) != "sha256:" + hash_of_stored(stored):
            raise RegistryError(f"internal error: the bytes of {stored} do not match its name")

    def read_blob(self, digest: str) -> bytes:
        blob_tag(digest)  # refuses a malformed digest before it reaches a URL
        return self.client.read_blob(self.repository, digest)

    def _push(self, data: bytes) -> Descriptor:
        digest = sha256_bytes(data)
        if digest not in self._known_blobs:
            self.client.push_blob(self.repository, data)
            self._known_blobs.add(digest)
        return Descriptor("application/octet-stream", digest, len(data))

    def write_blob(self, data: bytes) -> str:
        blob = self._push(data)
        self._push(EMPTY_JSON)
        manifest = blob_manifest(Descriptor(BLOB_ARTIFACT_TYPE, blob.digest, blob.size))
        # Always PUT: it is idempotent, and re-creates a tag someone deleted.
        self.client.put_manifest(self.repository, blob_tag(blob.digest), manifest)
        return blob.digest

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._held:
            raise RegistryError(f"internal error: the lock of {self.url} is already held by this publisher")
        path = self._locks / lock_name(self.url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise RegistryError(
                f"cannot create the lock file {path} for {self.url}: {e.strerror or e}",
                f"set {STATE_ENV} to a writable folder",
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            self._held, self._read_under_lock, self._seen_timestamp = True, False, None
            yield
        finally:
            self._held, self._read_under_lock, self._seen_timestamp = False, False, None
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
        """Pushed by digest to ``HOST/PREFIX/NAME:TAG``."""
        from bake.registry import images

        return images.push_docker_image(
            runner, docker_host, image_id, self._image_repo(name), tag, source=source
        )

    def attach_attestations(
        self, image_ref: str, envelopes: Mapping[str, bytes], created: str
    ) -> Mapping[str, str]:
        """cosign's ``sha256-<hex>.att`` and OCI 1.1 referrers (:mod:`bake.registry.referrers`)
        in the image's repository; *image_ref* is ``HOST/REPO@sha256:…`` in this registry."""
        from bake.registry import referrers
        from bake.registry.images import RegistryRef

        ref = RegistryRef.parse(image_ref)
        if ref.location.host != self.location.host:
            raise RegistryError(f"{image_ref} is not in {self.url}")
        return referrers.attach(self.client, ref.repository, ref.digest, envelopes, created)

    def store_files(self, files: Sequence[DiskFile], name: str, tag: str) -> str | None:
        """One OCI artifact in ``HOST/PREFIX/NAME`` whose layers are the files."""
        from bake.registry import disks

        return disks.push_to_oci(files, self._image_repo(name), tag)

    def _image_repo(self, name: str) -> str:
        validate_name(name)
        return f"{self.location.host}/{self.location.repository(name)}"
