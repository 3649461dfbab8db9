"""The oci:// backend and the image copies against a real registry, skopeo and engine.

The registry is the one at BAKE_TEST_REGISTRY (HOST:PORT; .ci/run starts one), else a
Debian ``docker-registry`` this module starts on a free loopback port. Tests that reach
into the registry's storage (tampering, garbage collection) always use one of their own.
Every test works under its own repository prefix, so runs never see each other's data.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from bake.attest.digest import sha256_bytes, sha256_file
from bake.attest.keys import SigningKey, load_signing_key, write_keypair
from bake.deploy.resolve import resolve
from bake.errors import RegistryError, TrustError
from bake.infra import process
from bake.infra.process import Call
from bake.registry import client, disks, images
from bake.registry.backend import open_registry
from bake.registry.client import Snapshot
from bake.registry.layout import Policy
from bake.registry.model import Release, TargetOutput
from bake.registry.ocistore import OciRegistry
from bake.registry.roles import Signers, serialize
from bake.registry.updater import METADATA_URL, TARGETS_URL, RegistryFetcher
from bake.targets.base import Outcome
from bake.targets.docker import engine as docker
from tests.conftest import ROOT
from tests.integration.conftest import require

pytestmark = pytest.mark.integration

WORKERS = 4
PER_WORKER = 10


@dataclass(frozen=True)
class LiveRegistry:
    host: str  # 127.0.0.1:PORT
    storage: Path | None = None  # set when this module started it
    config: Path | None = None

    def url(self, prefix: str) -> str:
        return f"oci://{self.host}/{prefix}"


def answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:
        e.close()
        return False
    except OSError:  # URLError, refused, reset
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(folder: Path) -> tuple[process.Spawned, LiveRegistry]:
    require("docker-registry")
    storage = folder / "data"
    storage.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # the free port may be taken before the registry binds it
        host = f"127.0.0.1:{free_port()}"
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {host}}}\n"
        )
        spawned = process.spawn(Call(argv=("docker-registry", "serve", str(config))), folder / "registry.log")
        deadline = time.monotonic() + 20
        while spawned.alive() and time.monotonic() < deadline and not answers(host):
            time.sleep(0.1)
        if answers(host):
            return spawned, LiveRegistry(host, storage, config)
        spawned.stop()
    pytest.fail(f"docker-registry did not start; see {folder / 'registry.log'}")


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    spawned, live = start_registry(tmp_path_factory.mktemp("oci-registry"))
    try:
        yield live
    finally:
        spawned.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    given = os.environ.get("BAKE_TEST_REGISTRY")
    if given:
        if not answers(given):
            pytest.fail(f"BAKE_TEST_REGISTRY={given} does not answer GET /v2/")
        yield LiveRegistry(given)
        return
    spawned, live = start_registry(tmp_path_factory.mktemp("oci-registry"))
    try:
        yield live
    finally:
        spawned.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("BAKE_STATE_DIR", str(folder))  # lock files of open_registry()
    return folder


def keypair(folder: Path, name: str) -> tuple[SigningKey, Path]:
    private, _ = write_keypair(folder / name, None)
    return load_signing_key(private, None), private


def now() -> datetime:
    return datetime.now(UTC)


def trust(key: SigningKey, state: Path) -> client.Trust:
    return client.Trust((), state, keys=(key.public,))


def release(name: str, version: str) -> Release:
    target = TargetOutput(sha256_bytes(f"{name}@{version}".encode()))
    return Release(name, version, f"key-{name}-{version}", now(), {"docker": target})


def published(registry: OciRegistry, key: SigningKey, names: list[str], state: Path) -> Snapshot:
    for i, name in enumerate(names):
        client.publish(registry, trust(key, state), Signers(key), release(name, f"1.{i}.0"), {}, now=now())
    return client.read(registry, trust(key, state))


def verified(url: str, key: SigningKey, state: Path) -> Snapshot:
    snapshot = client.read(open_registry(url), trust(key, state))
    snapshot.images()  # every image document loads and matches its signed hash
    return snapshot


def blob_file(live: LiveRegistry, digest: str) -> Path:
    assert live.storage is not None
    hexd = digest.removeprefix("sha256:")
    return live.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


# --------------------------------------------------------------------------- the backend


def test_init_publish_read(registry: LiveRegistry, prefix: str, tmp_path: Path, state_dir: Path) -> None:
    key, _ = keypair(tmp_path, "publisher")
    root_key, _ = keypair(tmp_path, "root")
    url = registry.url(prefix)
    reg = open_registry(url)
    assert isinstance(reg, OciRegistry) and reg.read_metadata("timestamp.json") is None
    client.init(reg, Signers(key, (root_key,)), [root_key.public], 1, Policy(), now=now())
    with pytest.raises(RegistryError, match="already set up"):
        client.init(reg, Signers(key, (root_key,)), [root_key.public], 1, Policy(), now=now())
    by_root = client.Trust((), state_dir, keys=(root_key.public,))
    first = client.publish(reg, by_root, Signers(key), release("web", "1.4.0"), {}, now=now())
    again = client.publish(reg, by_root, Signers(key), release("web", "1.4.0"), {}, now=now())
    assert first.created and not again.created and first.version == "1.4.0+1"

    snapshot = client.read(open_registry(url), client.Trust((), tmp_path / "reader", keys=(root_key.public,)))
    assert snapshot.serial == 2 and snapshot.versions.root == 1
    assert list(snapshot.image("web").versions) == ["1.4.0+1"]


def test_the_reference_tuf_client_reads_an_oci_registry(
    registry: LiveRegistry, prefix: str, tmp_path: Path, state_dir: Path
) -> None:
    """python-tuf's Updater, bootstrapped with the first root only and fed by the registry
    API (metadata are tagged artifacts, targets are blobs), verifies what bake published."""
    key, _ = keypair(tmp_path, "publisher")
    reg = open_registry(registry.url(prefix))
    client.publish(reg, trust(key, state_dir), Signers(key), release("web", "1.4.0"), {}, now=now())
    client.publish(reg, trust(key, state_dir), Signers(key), release("web", "1.5.0"), {}, now=now())
    cache = tmp_path / "tuf-cache"
    cache.mkdir()
    bootstrap = reg.read_metadata("1.root.json")
    assert bootstrap is not None
    updater = Updater(
        str(cache),
        METADATA_URL,
        target_dir=str(cache),
        target_base_url=TARGETS_URL,
        fetcher=RegistryFetcher(open_registry(registry.url(prefix))),
        bootstrap=bootstrap,
    )
    updater.refresh()
    info = updater.get_targetinfo("images/web.json")
    assert info is not None
    doc = json.loads(Path(updater.download_target(info)).read_bytes())
    assert sorted(doc["versions"]) == ["1.4.0+1", "1.5.0+1"]
    resolved = resolve(
        client.read(open_registry(registry.url(prefix)), trust(key, state_dir)), "web@1.5.0", "docker"
    )
    assert doc["versions"]["1.5.0+1"]["targets"]["docker"]["digest"] == resolved.digest


def test_tampered_blobs_in_storage_are_caught(
    own_registry: LiveRegistry, prefix: str, tmp_path: Path
) -> None:
    key, _ = keypair(tmp_path, "publisher")
    url = own_registry.url(prefix)
    reg = OciRegistry.open(url.removeprefix("oci://"), environ={"BAKE_STATE_DIR": str(tmp_path)})
    published(reg, key, ["web"], tmp_path / "writer")
    docs = [b for b in (own_registry.storage or Path()).rglob("data") if b'"bake.image/v1"' in b.read_bytes()]
    assert len(docs) == 1
    original = docs[0].read_bytes()
    docs[0].write_bytes(original.replace(b'"web"', b'"bad"'))
    with pytest.raises(TrustError, match=r"has the content of|does not match"):
        verified(url, key, tmp_path / "reader")
    docs[0].write_bytes(original)
    verified(url, key, tmp_path / "reader")

    # the timestamp itself: its manifest names it by digest, its signature covers it
    manifest = reg.client.get_manifest(reg.repository, "timestamp.json")
    assert manifest is not None
    stored = blob_file(own_registry, json.loads(manifest[0])["layers"][0]["digest"])
    stored.write_bytes(stored.read_bytes().replace(b'"version"', b'"versi0n"'))
    with pytest.raises((TrustError, RegistryError)):
        verified(url, key, tmp_path / "fresh")


def test_metadata_signed_by_another_key_is_refused(
    registry: LiveRegistry, prefix: str, tmp_path: Path, state_dir: Path
) -> None:
    key, _ = keypair(tmp_path, "publisher")
    evil, _ = keypair(tmp_path, "attacker")
    url = registry.url(prefix)
    published(OciRegistry.open(url.removeprefix("oci://")), key, ["web"], tmp_path / "writer")
    # The attacker has push access to the registry, not the publisher's keys: a newer
    # timestamp signed with their own key is refused by every client.
    attacker = OciRegistry.open(
        url.removeprefix("oci://"), environ={"BAKE_STATE_DIR": str(tmp_path / "evil")}
    )
    data = attacker.read_metadata("timestamp.json")
    assert data is not None
    forged = Metadata.from_bytes(data)
    forged.signed.version += 10
    forged.signatures.clear()
    forged.sign(evil.signer)
    with attacker.locked():
        attacker.read_metadata("timestamp.json")
        attacker.write_metadata("timestamp.json", serialize(forged))
    with pytest.raises(TrustError, match="not signed"):
        verified(url, key, tmp_path / "reader")


def test_blobs_survive_garbage_collection(own_registry: LiveRegistry, prefix: str, tmp_path: Path) -> None:
    key, _ = keypair(tmp_path, "publisher")
    url = own_registry.url(prefix)
    reg = OciRegistry.open(url.removeprefix("oci://"), environ={"BAKE_STATE_DIR": str(tmp_path)})
    published(reg, key, ["web", "app"], tmp_path / "writer")
    orphan = reg.client.push_blob(reg.repository, b"pushed without a tag").digest  # the control
    assert own_registry.config is not None
    process.run(
        Call(argv=("docker-registry", "garbage-collect", "--delete-untagged", str(own_registry.config)))
    )

    assert not reg.client.has_blob(reg.repository, orphan)  # the collector did run
    snapshot = verified(url, key, tmp_path / "reader")
    assert snapshot.names() == ["app", "web"] and snapshot.serial == 3


# argv: registry URL, key file, image name, worker number, number of versions to publish
WORKER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from bake.attest.keys import load_signing_key
from bake.attest.digest import sha256_bytes
from bake.registry.backend import open_registry
from bake.registry.client import Trust, publish
from bake.registry.model import Release, TargetOutput
from bake.registry.roles import Signers

url, key_file, name, worker, count, state = sys.argv[1:7]
registry = open_registry(url)
key = load_signing_key(Path(key_file), None)
trust = Trust((), Path(state), keys=(key.public,))
for i in range(int(count)):
    version = f"{worker}.{i}.0"
    out = TargetOutput(sha256_bytes(f"{name}@{version}".encode()))
    release = Release(name, version, f"key-{worker}-{i}", datetime.now(UTC), {"docker": out})
    published = publish(registry, trust, Signers(key), release, {}, now=datetime.now(UTC))
    assert published.created and published.version == version + "+1", published
"""


@pytest.mark.parametrize("layout", ["distinct-images", "one-image"])
def test_concurrent_publishers(
    registry: LiveRegistry, prefix: str, tmp_path: Path, state_dir: Path, layout: str
) -> None:
    key, key_path = keypair(tmp_path, "publisher")
    url = registry.url(prefix)
    client.init(open_registry(url), Signers(key), [key.public], 1, Policy(), now=now())
    names = [f"img{w}" if layout == "distinct-images" else "shared" for w in range(WORKERS)]
    env = {"PYTHONPATH": str(ROOT), "BAKE_STATE_DIR": str(state_dir)}  # one machine: one lock folder

    def worker(w: int) -> process.Result:
        argv = (
            sys.executable,
            "-c",
            WORKER,
            url,
            str(key_path),
            names[w],
            str(w),
            str(PER_WORKER),
            str(state_dir),
        )
        return process.run(Call(argv=argv, env=env, timeout=600))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(worker, range(WORKERS)))  # each raises if its worker failed

    snapshot = verified(url, key, tmp_path / "reader")
    assert snapshot.serial == 1 + WORKERS * PER_WORKER  # set up + one per publish: none lost
    got = {f"{name}@{version}" for name, doc in snapshot.images().items() for version in doc.versions}
    assert got == {f"{names[w]}@{w}.{i}.0+1" for w in range(WORKERS) for i in range(PER_WORKER)}


def test_a_publish_racing_resolves_through_a_real_registry(
    registry: LiveRegistry, prefix: str, tmp_path: Path, state_dir: Path
) -> None:
    """The race of tests/integration/test_registry_concurrency.py over the Distribution API:
    the timestamp tag moves while deployers read; none is told of a rollback or a replay."""
    from tests.integration.test_registry_concurrency import race

    key, key_path = keypair(tmp_path, "publisher")
    url = registry.url(prefix)
    client.init(open_registry(url), Signers(key), [key.public], 1, Policy(), now=now())
    race(url, key_path, tmp_path, {"PYTHONPATH": str(ROOT), "BAKE_STATE_DIR": str(state_dir)}, versions=15)


def test_file_artifacts_stream_through_a_real_registry(
    registry: LiveRegistry, prefix: str, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(os.urandom(3 * (1 << 20) + 77))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(1000))
    files = [
        disks.DiskFile("disk", disk, sha256_file(disk)),
        disks.DiskFile("kernel", kernel, sha256_file(kernel)),
    ]
    repo = f"{registry.host}/{prefix}/disk"
    ref = disks.push_to_oci(files, repo, "1.0", chunk=1 << 20)  # the disk in 4 PATCH requests
    assert disks.push_to_oci(files, repo, "1.0") == ref  # idempotent
    out = tmp_path / "out"
    wanted = {f.role: f.digest for f in files}
    got = disks.fetch(
        f"oci://{registry.host}/{prefix}", ref, wanted, {"disk": out / "d", "kernel": out / "k"}
    )
    assert {g.role: g.size for g in got} == {"disk": disk.stat().st_size, "kernel": 1000}
    assert (out / "d").read_bytes() == disk.read_bytes()


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def web_image(engine: docker.Engine, baked_web: Outcome) -> Iterator[str]:
    """The baked web image, held by a tag of this module's own: the tests below remove the
    references they create, and must not delete the image if its own tags have moved on."""
    require("skopeo")
    image_id = str(baked_web.record.artifact.id)
    holder = f"bake-test/oci-holder:{uuid.uuid4().hex[:12]}"
    docker.tag(process.run, engine, image_id, holder)
    try:
        yield image_id
    finally:
        process.run(engine.call("rmi", holder, check=False))


def test_docker_image_by_digest(
    registry: LiveRegistry, prefix: str, engine: docker.Engine, web_image: str
) -> None:
    image_id = web_image
    run = process.run
    pushed = images.push_docker_image(run, engine.host, image_id, f"{registry.host}/{prefix}/web", "1.4.0")
    assert pushed.ref == f"{registry.host}/{prefix}/web@{pushed.digest}"
    assert pushed.config_digest == image_id  # Docker v2s2 kept: the engine sees the baked ID
    pulled_name = images.local_name(images.RegistryRef.parse(pushed.ref))
    try:
        # A deployer's engine pulls the pinned ref (127.0.0.0/8 is an insecure registry to dockerd).
        run(engine.call("pull", pushed.ref, timeout=300))
        assert docker.image_id(run, engine, pushed.ref) == image_id
        out = run(engine.call("run", "--rm", "--entrypoint", "cat", pushed.ref, "/etc/bake-release")).stdout
        assert "BAKE_RECIPE=debian-base" in out
        assert images.pull_to_docker(run, engine.host, pushed.ref) == image_id
    finally:
        run(engine.call("rmi", pushed.ref, pulled_name, check=False))


def test_docker_image_through_an_oci_layout(
    tmp_path: Path, engine: docker.Engine, baked_web: Outcome
) -> None:
    require("skopeo")
    image_id = str(baked_web.record.artifact.id)
    run = process.run
    layout = tmp_path / "reg" / "oci" / "web"
    pushed = images.export_docker_image_to_layout(run, engine.host, image_id, layout, "1.4.0-1")
    assert pushed.ref == f"oci-layout://{layout.resolve()}@{pushed.digest}"
    name = images.local_name(images.parse_layout_ref(pushed.ref))
    try:
        # The layout holds an OCI manifest; the conversion rewrote the config.
        assert images.pull_to_docker(run, engine.host, pushed.ref) == pushed.config_digest
        out = run(engine.call("run", "--rm", "--entrypoint", "cat", name, "/etc/bake-release")).stdout
        assert "BAKE_RECIPE=debian-base" in out
    finally:
        run(engine.call("rmi", name, check=False))
