"""Many processes publishing into one dir: registry at once, and publishers killed mid-write.

The workers are separate interpreters (``python -c``), so the registry lock and the
atomic writes are exercised across real processes, as in CI fleets.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
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


# --------------------------------------------------------------------------- a publish racing resolves

# argv: registry URL, key file, number of versions. Publishes web with a passing test gate.
PUBLISHER = """
import sys
from pathlib import Path
from bake.attest.keys import load_signing_key
from bake.registry.backend import open_registry
from bake.registry.client import Trust
from tests.unit.registry.regs import Setup, publish
url, key_file, count, state = sys.argv[1:5]
s = Setup(open_registry(url), load_signing_key(Path(key_file), None), Path(state))
for i in range(int(count)):
    publish(s, version=f"1.{i + 1}.0", out=str(i))
"""

# argv: registry URL, root public key, state folder ("fresh": a new one per resolve), stop
# file. Resolves web@latest the way `bake resolve` does, until the stop file appears; prints
# each failure, and the serials it saw.
RESOLVER = """
import json, sys, time
from pathlib import Path
from bake.attest.keys import load_public_key
from bake.deploy.resolve import resolve
from bake.deploy.verified import check_attestations
from bake.errors import BakeError
from bake.registry.backend import open_registry
from bake.registry.client import Trust, read
url, pub, state, stop = sys.argv[1:5]
registry, key = open_registry(url), load_public_key(Path(pub))
serials, failures, n = [], [], 0
while not Path(stop).exists() or n < 3:
    folder = Path(state) / str(n) if state.endswith("fresh") else Path(state)
    n += 1
    try:
        snap = read(registry, Trust((), folder, keys=(key,)))
        res = resolve(snap, "web@latest", "docker")
        check_attestations(res, snap)
        serials.append(res.serial)
    except BakeError as e:
        failures.append({"error": e.message, "hint": e.hint})
print(json.dumps({"serials": serials, "failures": failures}))
"""


def test_a_publish_racing_resolves_is_never_reported_as_an_attack(
    setup: tuple[DirRegistry, Path, PublicKey], tmp_path: Path
) -> None:
    """Deployers resolve while CI publishes: each resolve sees one registry state or a later
    one, never a rollback, a replay or a freeze, and no machine's state is blamed."""
    registry, key, _public = setup
    race(registry.url, key, tmp_path, {"PYTHONPATH": str(ROOT)})


def race(url: str, key: Path, tmp_path: Path, env: dict[str, str], versions: int = 30) -> None:
    """30 publishes while four deployers resolve (three share one machine's trust state)."""
    env = {**os.environ, **env}
    pub = key.with_suffix(".pub")  # the registry's root key
    publisher = [sys.executable, "-c", PUBLISHER, url, str(key)]
    subprocess.run([*publisher, "1", str(tmp_path / "pub")], env=env, check=True)
    stop = tmp_path / "stop"
    shared = tmp_path / "machine"
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", RESOLVER, url, str(pub), str(state), str(stop)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for state in (shared, shared, shared, tmp_path / "fresh")
    ]
    published = subprocess.run(
        [*publisher, str(versions), str(tmp_path / "pub")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    stop.touch()
    results = []
    for proc in readers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert published.returncode == 0, published.stderr
    failures = [f for r in results for f in r["failures"]]
    assert not failures, failures[:3]
    for r in results[:3]:
        assert r["serials"] == sorted(r["serials"]), "a deployer saw the registry go back"
    seen = {s for r in results for s in r["serials"]}
    assert len(seen) > 5, f"the resolves did not overlap the publishes: {sorted(seen)}"


def test_no_hint_advises_deleting_trust_state() -> None:
    """Lost trust state makes a machine trust what it is served again: no error message
    may tell an operator to delete it (or any of it) to get past a refusal."""
    advice = re.compile(r"\b(delet|remov|rm\b|wipe|reset|clear|forget)", re.IGNORECASE)
    state = re.compile(r"(state|tuf|trust|cache|seen|serial|\.local)", re.IGNORECASE)
    offending = []
    for path in sorted((ROOT / "bake").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and _called(node).endswith("Error")):
                continue
            hints = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "hint")]
            for hint in hints:
                text = "".join(
                    n.value
                    for n in ast.walk(hint)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                )
                if advice.search(text) and state.search(text):
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text}")
    assert not offending, offending


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
