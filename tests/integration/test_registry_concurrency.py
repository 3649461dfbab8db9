"""Many processes publishing into one dir: registry at once, and publishers killed mid-write.

The workers are separate interpreters (``python -c``), so the registry lock and the
atomic writes are exercised across real processes, as in CI fleets.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bake
from bake.attest.keys import PublicKey, load_public_key, load_signing_key, write_keypair
from bake.registry import client
from bake.registry.client import Snapshot
from bake.registry.dirstore import DirRegistry
from bake.registry.layout import Policy
from bake.registry.roles import Signers

pytestmark = pytest.mark.integration

WORKERS = 8
PER_WORKER = 25
ROOT = Path(bake.__file__).resolve().parents[1]

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
print("ready", flush=True)
for i in range(int(count)):
    version = f"{worker}.{i}.0"
    out = TargetOutput(sha256_bytes(f"{name}@{version}".encode()))
    release = Release(name, version, f"key-{worker}-{i}", datetime.now(UTC), {"docker": out})
    published = publish(registry, trust, Signers(key), release, {}, now=datetime.now(UTC))
    assert published.created and published.version == version + "+1", published
"""


def spawn(registry: DirRegistry, key: Path, name: str, worker: int, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    state = registry.root.parent / f"state-{worker}"  # each publisher a machine of its own
    argv = [sys.executable, "-c", WORKER, registry.url, str(key), name, str(worker), str(count), str(state)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[DirRegistry, Path, PublicKey]:
    key_path, pub_path = write_keypair(tmp_path / "publisher", None)
    public = load_public_key(pub_path)
    registry = DirRegistry.at(tmp_path / "reg")
    key = load_signing_key(key_path, None)
    client.init(registry, Signers(key), [public], 1, Policy(), now=datetime.now(UTC))
    return registry, key_path, public


def verified(registry: DirRegistry, public: PublicKey) -> Snapshot:
    state = registry.root.parent / f"reader-{time.monotonic_ns()}"  # a fresh machine each time
    snapshot = client.read(registry, client.Trust((), state, keys=(public,)))
    snapshot.images()  # every image document loads and matches its signed hash
    return snapshot


def run_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


@pytest.mark.parametrize("layout", ["distinct-images", "one-image"])
def test_concurrent_publishers(setup: tuple[DirRegistry, Path, PublicKey], layout: str) -> None:
    registry, key, public = setup
    names = [f"img{w}" if layout == "distinct-images" else "shared" for w in range(WORKERS)]

    run_all([spawn(registry, key, names[w], w, PER_WORKER) for w in range(WORKERS)])

    snapshot = verified(registry, public)
    assert snapshot.serial == 1 + WORKERS * PER_WORKER  # set up + one per publish
    published = {f"{name}@{version}" for name, doc in snapshot.images().items() for version in doc.versions}
    expected = {f"{names[w]}@{w}.{i}.0+1" for w in range(WORKERS) for i in range(PER_WORKER)}
    assert published == expected


def test_publishers_killed_at_random_instants(setup: tuple[DirRegistry, Path, PublicKey]) -> None:
    registry, key, public = setup
    rng = random.Random(20240501)
    counts = []
    for round_ in range(8):
        procs = [spawn(registry, key, f"img{w}", round_ * 10 + w, 10_000) for w in range(2)]
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        for proc in procs:
            proc.kill()  # SIGKILL: no cleanup, no finally blocks
            proc.communicate(timeout=60)

        snapshot = verified(registry, public)
        versions = sum(len(doc.versions) for doc in snapshot.images().values())
        # Each completed publish added exactly one version and one serial: nothing torn.
        assert snapshot.serial == 1 + versions
        counts.append(versions)
    assert counts[-1] > counts[0] > 0, counts  # the publishers did get work done

    # The lock died with its holders: a new publisher gets through.
    run_all([spawn(registry, key, "after", 99, 1)])
    assert verified(registry, public).serial == 2 + versions
