"""The oci:// backend against an in-memory OCI Distribution registry (the ``Send`` seam).

``FakeRegistry`` is also used by test_images.py. The real registry is exercised by
tests/integration/test_oci_registry.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import pytest

from bake.attest.digest import sha256_bytes
from bake.attest.keys import load_signing_key, write_keypair
from bake.errors import RegistryError, TrustError
from bake.registry.backend import open_registry
from bake.registry.ocistore import (
    BLOB_ARTIFACT_TYPE,
    EMPTY_CONFIG,
    METADATA_ARTIFACT_TYPE,
    OCI_EMPTY,
    OCI_MANIFEST,
    TUF_MEDIA_TYPE,
    Credentials,
    Descriptor,
    OciLocation,
    OciRegistry,
    Reply,
    artifact_manifest,
    blob_tag,
    lock_dir,
    lock_name,
    metadata_tag,
    parse_challenge,
    parse_manifest,
    urllib_send,
)

# --------------------------------------------------------------------------- the fake

HOST = "127.0.0.1:5000"
TOKEN = "t0k3n"
_BLOB = re.compile(r"/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})")
_UPLOAD = re.compile(r"/v2/(?P<repo>.+)/blobs/uploads/(?P<id>[^/]*)")
_MANIFEST = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)")


def reply(status: int, body: bytes = b"", **headers: str) -> Reply:
    message = Message()
    for k, v in headers.items():
        message[k.replace("_", "-")] = v
    return Reply(status, message, io.BytesIO(body))


def error(status: int, code: str) -> Reply:
    return reply(status, json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode())


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class FakeRegistry:
    """Blobs (HEAD/GET; POST + PATCH + PUT uploads), manifests (HEAD/GET/PUT by tag or
    digest, blobs they name must exist), optional Basic or Bearer auth."""

    auth: str | None = None  # None, "basic" or "bearer"
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    bodies: list[int] = field(default_factory=list)  # sizes of the chunks of streamed bodies

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p in self.log if m == method and fragment in p)

    def __call__(self, request: urllib.request.Request) -> Reply:
        url = urllib.parse.urlsplit(request.full_url)
        method = request.get_method()
        self.log.append((method, url.path))
        data = self._body(request)
        if url.path == "/token":
            if request.get_header("Authorization") != basic("ci", "s3cret"):
                return reply(401)
            return reply(200, json.dumps({"token": TOKEN}).encode())
        given = request.get_header("Authorization")
        self.authorizations.append(given)
        if self.auth == "basic" and given != basic("ci", "s3cret"):
            return reply(401, WWW_Authenticate='Basic realm="fake"')
        if self.auth == "bearer" and given != f"Bearer {TOKEN}":
            return reply(401, WWW_Authenticate=f'Bearer realm="http://{HOST}/token",service="fake"')
        if m := _UPLOAD.fullmatch(url.path):
            return self._upload(method, m["repo"], m["id"], url.query, data, request)
        if m := _BLOB.fullmatch(url.path):
            blob = self.blobs.get((m["repo"], m["digest"]))
            if blob is None:
                return error(404, "BLOB_UNKNOWN")
            return reply(200, b"" if method == "HEAD" else blob, Content_Length=str(len(blob)))
        if m := _MANIFEST.fullmatch(url.path):
            return self._manifest(method, m["repo"], m["ref"], data)
        return error(404, "NOT_FOUND")

    def _body(self, request: urllib.request.Request) -> bytes:
        body = request.data
        if body is None or isinstance(body, bytes):
            return body or b""
        chunks = [bytes(c) for c in body]  # type: ignore[union-attr]  # an iterable of chunks
        self.bodies += [len(c) for c in chunks]
        return b"".join(chunks)

    def _upload(
        self, method: str, repo: str, upload: str, query: str, data: bytes, request: urllib.request.Request
    ) -> Reply:
        if method == "POST":
            upload = f"u{len(self.uploads)}"
            self.uploads[upload] = bytearray()
            return reply(202, Location=f"/v2/{repo}/blobs/uploads/{upload}?_state=x")
        buffer = self.uploads.get(upload)
        if buffer is None:
            return error(404, "BLOB_UPLOAD_UNKNOWN")
        if method == "PATCH":
            start = int((request.get_header("Content-range") or "0-0").split("-")[0])
            if start != len(buffer):
                return reply(416)
            buffer += data
            return reply(202, Location=f"/v2/{repo}/blobs/uploads/{upload}?_state=y")
        buffer += data
        digest = urllib.parse.parse_qs(query)["digest"][0]
        if digest_of(bytes(buffer)) != digest:
            return error(400, "DIGEST_INVALID")
        self.blobs[repo, digest] = bytes(buffer)
        return reply(201, Docker_Content_Digest=digest)

    def _manifest(self, method: str, repo: str, ref: str, data: bytes) -> Reply:
        if method == "PUT":
            doc = json.loads(data)
            for d in [doc["config"], *doc["layers"]]:
                if (repo, d["digest"]) not in self.blobs:
                    return error(400, "MANIFEST_BLOB_UNKNOWN")
            digest = digest_of(data)
            self.manifests[repo, digest] = data
            if not ref.startswith("sha256:"):
                self.tags[repo, ref] = digest
            return reply(201, Docker_Content_Digest=digest)
        digest = ref if ref.startswith("sha256:") else self.tags.get((repo, ref), "")
        manifest = self.manifests.get((repo, digest))
        if manifest is None:
            return error(404, "MANIFEST_UNKNOWN")
        return reply(200, b"" if method == "HEAD" else manifest, Docker_Content_Digest=digest)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


def opened(fake: FakeRegistry, tmp_path: Path, env: dict[str, str] | None = None) -> OciRegistry:
    environ = {"BAKE_STATE_DIR": str(tmp_path / "state"), **(env or {})}
    return OciRegistry.open(f"{HOST}/bake", url=f"oci://{HOST}/bake", environ=environ, send=fake)


@pytest.fixture
def reg(fake: FakeRegistry, tmp_path: Path) -> OciRegistry:
    return opened(fake, tmp_path)


ENVELOPE = {"payloadType": "t", "payload": "cA==", "signatures": []}


# --------------------------------------------------------------------------- locations


@pytest.mark.parametrize(
    ("text", "host", "prefix", "base", "url"),
    [
        (
            "127.0.0.1:5000/bake",
            "127.0.0.1:5000",
            "bake",
            "http://127.0.0.1:5000",
            "oci://127.0.0.1:5000/bake",
        ),
        ("LOCALHOST:5000/a/b/", "localhost:5000", "a/b", "http://localhost:5000", "oci://localhost:5000/a/b"),
        ("[::1]:5000/x", "[::1]:5000", "x", "http://[::1]:5000", "oci://[::1]:5000/x"),
        ("127.1.2.3/x", "127.1.2.3", "x", "http://127.1.2.3", "oci://127.1.2.3/x"),
        ("reg.example.org/team/bake", "reg.example.org", "team/bake", "https://reg.example.org", None),
        ("reg.example.org:8443", "reg.example.org:8443", "", "https://reg.example.org:8443", None),
        ("a.b/x__y/z-w.v", "a.b", "x__y/z-w.v", "https://a.b", None),
    ],
)
def test_locations(text: str, host: str, prefix: str, base: str, url: str | None) -> None:
    location = OciLocation.parse(text)
    assert (location.host, location.prefix, location.base) == (host, prefix, base)
    assert location.insecure == base.startswith("http:")
    assert location.url == (url or f"oci://{text.rstrip('/')}".removesuffix("/"))
    assert location.repository("bake-meta") == (f"{prefix}/bake-meta" if prefix else "bake-meta")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no host"),
        ("/bake", "has no host"),
        ("user:pw@reg.example.org/bake", "has credentials"),
        ("reg.example.org:port/bake", "malformed host or port"),
        ("reg.example.org:99999/bake", "malformed host or port"),
        ("reg.example.org/Bake", "'Bake' is not a valid repository path component"),
        ("reg.example.org/a//b", "'' is not a valid repository path component"),
        ("reg.example.org/a..b", "'a..b' is not a valid"),
        ("reg.example.org/-a", "'-a' is not a valid"),
    ],
)
def test_bad_locations(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=re.escape(message)):
        OciLocation.parse(text, f"oci://{text}")


def test_open_registry_oci_parses_without_touching_the_network() -> None:
    registry = open_registry("oci://127.0.0.1:1/bake/")
    assert isinstance(registry, OciRegistry)
    assert registry.url == "oci://127.0.0.1:1/bake"
    assert registry.repository == "bake/bake-meta"
    with pytest.raises(RegistryError, match=re.escape("'oci://127.0.0.1:1/BAKE'")):
        open_registry("oci://127.0.0.1:1/BAKE")


def test_lock_files_are_keyed_by_url(tmp_path: Path) -> None:
    a, b = lock_name("oci://127.0.0.1:5000/bake"), lock_name("oci://127.0.0.1:5000/bake2")
    assert a != b and a == lock_name("oci://127.0.0.1:5000/bake")
    assert re.fullmatch(r"oci_127\.0\.0\.1_5000_bake-[0-9a-f]{16}\.lock", a)
    assert len(lock_name("oci://h/" + "x" * 500)) < 120
    assert lock_dir({"BAKE_STATE_DIR": str(tmp_path)}) == tmp_path / "locks"
    assert lock_dir({}) == Path.home() / ".local" / "state" / "bake" / "locks"


# --------------------------------------------------------------------------- manifests


def test_metadata_manifests_are_oci_artifacts() -> None:
    layer = Descriptor(TUF_MEDIA_TYPE, sha256_bytes(b"md"), 2)
    data = artifact_manifest(METADATA_ARTIFACT_TYPE, [layer])
    assert json.loads(data) == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": METADATA_ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_bytes(b"{}"), "size": 2},
        "layers": [{"mediaType": TUF_MEDIA_TYPE, "digest": sha256_bytes(b"md"), "size": 2}],
    }
    assert data == artifact_manifest(METADATA_ARTIFACT_TYPE, [layer])  # canonical: same input, same digest
    assert EMPTY_CONFIG.digest == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert parse_manifest(data, "m") == (METADATA_ARTIFACT_TYPE, [layer])
    assert metadata_tag("3.bins-0f.json") == "3.bins-0f.json"
    with pytest.raises(RegistryError, match="not a metadata file name"):
        metadata_tag("../x")


def test_manifest_annotations() -> None:
    layer = Descriptor("application/x", sha256_bytes(b"x"), 1, {"org.opencontainers.image.title": "x"})
    doc = json.loads(artifact_manifest("application/y", [layer], {"k": "v"}))
    assert doc["annotations"] == {"k": "v"}
    assert doc["layers"][0]["annotations"] == {"org.opencontainers.image.title": "x"}


def _manifest(media_type: str, *layers: dict[str, object]) -> bytes:
    return json.dumps({"mediaType": media_type, "layers": list(layers)}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "not an OCI image manifest"),
        (_manifest("application/vnd.docker.distribution.manifest.v2+json"), "not an OCI"),
        (_manifest(OCI_MANIFEST, {"digest": "sha256:x", "size": 1, "mediaType": "a"}), r"layers\[0\]"),
        (
            _manifest(OCI_MANIFEST, {"digest": sha256_bytes(b""), "size": -1, "mediaType": "a"}),
            r"layers\[0\]",
        ),
        (_manifest(OCI_MANIFEST, {"digest": sha256_bytes(b""), "size": 0}), r"layers\[0\]"),
    ],
)
def test_malformed_manifests_are_trust_errors(data: bytes, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        parse_manifest(data, "the manifest")


def test_blob_tags() -> None:
    digest = sha256_bytes(b"x")
    assert blob_tag(digest) == "sha256-" + digest.removeprefix("sha256:")
    with pytest.raises(RegistryError, match="not a blob digest"):
        blob_tag("sha256:../../x")


def test_challenges_and_credentials() -> None:
    assert parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="r:a:pull"') == (
        "bearer",
        {"realm": "https://auth.example/token", "service": "reg", "scope": "r:a:pull"},
    )
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert Credentials.from_env({}) is None
    creds = Credentials.from_env({"BAKE_REGISTRY_USER": "ci", "BAKE_REGISTRY_PASSWORD": "s3cret"})
    assert creds is not None and creds.basic() == basic("ci", "s3cret")
    assert "s3cret" not in repr(creds)


# --------------------------------------------------------------------------- blobs


def test_blobs_round_trip_and_stay_reachable(fake: FakeRegistry, reg: OciRegistry) -> None:
    digest = reg.write_blob(b"hello")
    assert digest == sha256_bytes(b"hello")
    assert reg.read_blob(digest) == b"hello"
    repo = "bake/bake-meta"
    assert fake.blobs[repo, digest] == b"hello"
    # A tag per blob keeps it from a garbage collector: its manifest names exactly it.
    artifact, layers = parse_manifest(fake.manifests[repo, fake.tags[repo, blob_tag(digest)]], "m")
    assert artifact == BLOB_ARTIFACT_TYPE
    assert [(d.digest, d.size) for d in layers] == [(digest, 5)]

    uploads = fake.count("POST")
    assert reg.write_blob(b"hello") == digest  # idempotent: nothing uploaded again
    assert opened(fake, Path("/nonexistent")).write_blob(b"hello") == digest  # nor by another publisher
    assert fake.count("POST") == uploads


def test_a_tampered_or_missing_blob(fake: FakeRegistry, reg: OciRegistry) -> None:
    digest = reg.write_blob(b"hello")
    fake.blobs["bake/bake-meta", digest] = b"hellO"
    with pytest.raises(
        TrustError, match=f"blob {digest} in 127.0.0.1:5000/bake/bake-meta has the content of"
    ):
        reg.read_blob(digest)
    with pytest.raises(RegistryError, match="is missing from"):
        reg.read_blob(sha256_bytes(b"nothing"))
    with pytest.raises(RegistryError, match="not a blob digest"):
        reg.read_blob("sha256:../../v2/_catalog")


# --------------------------------------------------------------------------- TUF metadata


def test_metadata_round_trip_and_pending_withdrawal(fake: FakeRegistry, reg: OciRegistry) -> None:
    assert reg.read_metadata("1.root.json") is None
    reg.write_metadata("1.root.json", b'{"r": 1}')
    assert reg.read_metadata("1.root.json") == b'{"r": 1}'
    manifest = fake.manifests["bake/bake-meta", fake.tags["bake/bake-meta", "1.root.json"]]
    artifact, (layer,) = parse_manifest(manifest, "m")
    assert (artifact, layer.media_type) == (METADATA_ARTIFACT_TYPE, TUF_MEDIA_TYPE)
    reg.write_metadata("pending.root.json", b"{}")
    reg.delete_metadata("pending.root.json")
    assert reg.read_metadata("pending.root.json") is None


def test_targets_are_blobs_named_by_their_hash(reg: OciRegistry) -> None:
    data = b'{"name": "web"}'
    stored = f"images/{sha256_bytes(data).removeprefix('sha256:')}.web.json"
    reg.write_target(stored, data)
    assert reg.read_target(stored) == data
    with pytest.raises(RegistryError, match="do not match its name"):
        reg.write_target(stored, b"other")


def test_the_timestamp_is_written_only_under_the_lock_after_reading(reg: OciRegistry) -> None:
    with pytest.raises(RegistryError, match="only be written under locked"):
        reg.write_metadata("timestamp.json", b"{}")
    with reg.locked(), pytest.raises(RegistryError, match="only be written under locked"):
        reg.write_metadata("timestamp.json", b"{}")
    with reg.locked():
        reg.read_metadata("timestamp.json")
        reg.write_metadata("timestamp.json", b"{}")
        with pytest.raises(RegistryError, match="already held"), reg.locked():
            pass  # pragma: no cover


def test_a_concurrent_publish_is_refused(fake: FakeRegistry, tmp_path: Path) -> None:
    # Two machines: separate lock folders, one registry.
    a, b = opened(fake, tmp_path / "a"), opened(fake, tmp_path / "b")
    with a.locked():
        a.read_metadata("timestamp.json")
        a.write_metadata("timestamp.json", b'{"v": 1}')
    with a.locked():
        a.read_metadata("timestamp.json")
        with b.locked():
            b.read_metadata("timestamp.json")
            b.write_metadata("timestamp.json", b'{"v": 2}')
        with pytest.raises(
            RegistryError, match=re.escape("concurrent publish: the timestamp of oci://127.0.0.1:5000/bake")
        ):
            a.write_metadata("timestamp.json", b'{"v": 3}')
    assert a.read_metadata("timestamp.json") == b'{"v": 2}'  # b's write stands


def test_a_metadata_tag_that_is_no_bake_metadata(fake: FakeRegistry, reg: OciRegistry) -> None:
    digest = reg.write_blob(b"{}")
    fake.tags["bake/bake-meta", "timestamp.json"] = fake.tags["bake/bake-meta", blob_tag(digest)]
    with pytest.raises(TrustError, match="is not bake metadata"):
        reg.read_metadata("timestamp.json")


def test_client_publish_read_through_the_oci_backend(reg: OciRegistry, tmp_path: Path) -> None:
    from tests.unit.registry.regs import Setup, publish

    key_path, _ = write_keypair(tmp_path / "k", None)
    s = Setup(reg, load_signing_key(key_path, None), tmp_path)  # type: ignore[arg-type]  # any backend
    assert publish(s).version == "1.0.0+1"
    snapshot = s.read()
    assert snapshot.serial == 2  # set up, then one publish
    assert list(snapshot.image("web").versions) == ["1.0.0+1"]


# --------------------------------------------------------------------------- auth and transport


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_credentials_answer_challenges(fake: FakeRegistry, tmp_path: Path, scheme: str) -> None:
    fake.auth = scheme
    env = {"BAKE_REGISTRY_USER": "ci", "BAKE_REGISTRY_PASSWORD": "s3cret"}
    reg = opened(fake, tmp_path, env)
    digest = reg.write_blob(b"x")
    assert reg.read_blob(digest) == b"x"
    assert fake.authorizations[0] is None  # nothing sent before the registry asks
    assert fake.authorizations[-1] == (basic("ci", "s3cret") if scheme == "basic" else f"Bearer {TOKEN}")
    assert fake.count("GET", "/token") <= 1  # one token for the repository


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_missing_or_wrong_credentials(fake: FakeRegistry, tmp_path: Path, scheme: str) -> None:
    fake.auth = scheme
    with pytest.raises(RegistryError) as info:
        opened(fake, tmp_path).read_metadata("timestamp.json")
    assert "BAKE_REGISTRY_USER" in (info.value.hint or "")
    with pytest.raises(RegistryError) as info:
        opened(fake, tmp_path, {"BAKE_REGISTRY_USER": "ci", "BAKE_REGISTRY_PASSWORD": "wrong"}).read_metadata(
            "timestamp.json"
        )
    assert "wrong" not in str(info.value) + str(info.value.hint)


def test_no_credentials_for_another_host(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.auth = "basic"
    reg = opened(fake, tmp_path, {"BAKE_REGISTRY_USER": "ci", "BAKE_REGISTRY_PASSWORD": "s3cret"})
    reg.read_metadata("timestamp.json")
    sent: list[str | None] = []

    def elsewhere(request: urllib.request.Request) -> Reply:
        sent.append(request.get_header("Authorization"))
        return reply(200)

    reg.client._send = elsewhere
    reg.client.request("GET", reg.repository, "http://storage.example/blob").close()
    assert sent == [None]
    with pytest.raises(RegistryError, match="no http"):
        reg.client.request("GET", reg.repository, "file:///etc/passwd")


def test_registry_errors_carry_the_registrys_words(fake: FakeRegistry, reg: OciRegistry) -> None:
    def refuse(request: urllib.request.Request) -> Reply:
        return error(500, "UNKNOWN")

    reg.client._send = refuse
    with pytest.raises(RegistryError, match="HTTP 500 UNKNOWN unknown"):
        reg.read_metadata("timestamp.json")


def test_an_unreachable_registry(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    location = OciLocation.parse(f"127.0.0.1:{port}/bake")
    reg = OciRegistry.open(f"127.0.0.1:{port}/bake", environ={"BAKE_STATE_DIR": str(tmp_path)})
    assert reg.location == location
    with pytest.raises(RegistryError, match=f"cannot reach the registry at http://127.0.0.1:{port}") as info:
        reg.read_metadata("timestamp.json")
    assert "docker-registry serve" in (info.value.hint or "")
    assert urllib_send(direct=True) is not None


def test_small_documents_have_a_size_limit() -> None:
    assert reply(200, b"x" * 10).read(10) == b"x" * 10
    with pytest.raises(RegistryError, match="more than 10 bytes"):
        reply(200, b"x" * 11).read(10)
