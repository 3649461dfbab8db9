"""The PostgreSQL metadata store against a real server: TUF metadata any TUF client reads,
one transaction per change conditioned on the version read, concurrent publishers on
separate state folders, leases by the database's clock."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from tuf.ngclient import Updater

from bake.app.lease import leased
from bake.attest.digest import sha256_bytes
from bake.attest.keys import SigningKey, load_signing_key, write_keypair
from bake.errors import TrustError
from bake.registry import client
from bake.registry.backend import open_registry
from bake.registry.model import Release, TargetOutput
from bake.registry.pgstore import PgLocation, PgRegistry
from bake.registry.roles import Signers
from bake.registry.updater import METADATA_URL, TARGETS_URL, RegistryFetcher
from tests.conftest import ROOT
from tests.integration.postgres import registry_url

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def release(name: str, version: str) -> Release:
    out = TargetOutput(sha256_bytes(f"{name}@{version}".encode()))
    return Release(name, version, f"key-{name}-{version}", now(), {"docker": out})


def trust(key: SigningKey, state: Path) -> client.Trust:
    return client.Trust((), state, keys=(key.public,))


def db(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(PgLocation.parse(url).conninfo, autocommit=True)


def pub(url: str, key: SigningKey, state: Path, name: str, version: str) -> client.Published:
    reg, rel = open_registry(url), release(name, version)
    return client.publish(reg, trust(key, state), Signers(key), rel, {}, now=now())


def timestamps(url: str) -> list[object]:
    sql = "SELECT version FROM bake_timestamps WHERE repo = %s ORDER BY version"
    with db(url) as conn:
        return [r[0] for r in conn.execute(sql, (PgLocation.parse(url).repo,))]


def test_publish_and_read_and_the_reference_tuf_client(pg: str, tmp_path: Path) -> None:
    url = registry_url(pg)
    key = SigningKey.generate()
    reg = open_registry(url)
    assert isinstance(reg, PgRegistry) and reg.read_metadata("timestamp.json") is None
    first = pub(url, key, tmp_path / "w", "web", "1.0.0")
    again = pub(url, key, tmp_path / "w", "web", "1.0.0")
    pub(url, key, tmp_path / "w", "web", "1.1.0")
    assert first.created and not again.created
    snap = client.read(open_registry(url), trust(key, tmp_path / "reader"))
    assert sorted(snap.image("web").versions) == ["1.0.0+1", "1.1.0+1"] and snap.serial == 3
    bootstrap = reg.read_metadata("1.root.json")
    assert bootstrap is not None
    with tempfile.TemporaryDirectory() as cache:
        updater = Updater(
            cache, METADATA_URL, target_dir=cache, target_base_url=TARGETS_URL,
            fetcher=RegistryFetcher(open_registry(url)), bootstrap=bootstrap,
        )  # fmt: skip
        info = updater.get_targetinfo("images/web.json")
        assert info is not None
        doc = json.loads(Path(updater.download_target(info)).read_bytes())
    assert sorted(doc["versions"]) == ["1.0.0+1", "1.1.0+1"]
    assert timestamps(url) == [1, 2, 3]  # every timestamp version is kept


def test_a_row_changed_in_the_database_is_refused(pg: str, tmp_path: Path) -> None:
    url = registry_url(pg)
    key = SigningKey.generate()
    reg = open_registry(url)
    assert isinstance(reg, PgRegistry)
    pub(url, key, tmp_path / "w", "web", "1.0.0")
    sql = "UPDATE bake_targets SET data = data || '\\x20'::bytea WHERE repo = %s AND stored LIKE 'images/%%'"
    with db(url) as conn:
        conn.execute(sql, (reg.location.repo,))
    with pytest.raises(TrustError):
        client.read(open_registry(url), trust(key, tmp_path / "fresh")).image("web")


def test_a_writer_that_lost_its_lock_is_refused_at_commit_and_retried(pg: str, tmp_path: Path) -> None:
    """Writer A reads version N under its lock, loses the lock (as when its session dies),
    writer B commits N+1; A's commit, conditioned on N, is refused and A's change is made
    again on B's state: both releases are there, nothing overwritten."""
    url = registry_url(pg)
    key = SigningKey.generate()
    a = open_registry(url)
    assert isinstance(a, PgRegistry)
    pub(url, key, tmp_path / "a", "web", "1.0.0")
    calls: list[int] = []

    def mutate(snapshot: client.Snapshot) -> tuple[dict[str, object], dict[str, bytes]]:
        calls.append(snapshot.serial)
        if len(calls) == 1:
            a._db().execute("SELECT pg_advisory_unlock_all()")  # the lock is gone
            pub(url, key, tmp_path / "b", "api", "2.0.0")
        change, _ = client.plan_publish(snapshot, release("web", "1.1.0"))
        return dict(change.docs), {}

    client.transact(a, trust(key, tmp_path / "a"), Signers(key), mutate, now=now())  # type: ignore[arg-type]
    assert calls == [2, 3]  # the second attempt saw B's commit
    snap = client.read(open_registry(url), trust(key, tmp_path / "reader"))
    assert snap.names() == ["api", "web"] and sorted(snap.image("web").versions) == ["1.0.0+1", "1.1.0+1"]
    assert snap.serial == 4


PUBLISHER = """
import sys, json
from datetime import UTC, datetime
from pathlib import Path
from bake.attest.digest import sha256_bytes
from bake.attest.keys import load_signing_key
from bake.registry import client
from bake.registry.backend import open_registry
from bake.registry.model import Release, TargetOutput
from bake.registry.roles import Signers

url, key_file, state, worker, count = sys.argv[1:6]
key = load_signing_key(Path(key_file), None)
trust = client.Trust((), Path(state), keys=(key.public,))
serials = []
for i in range(int(count)):
    name = f"w{worker}"
    out = TargetOutput(sha256_bytes(f"{name}/{i}".encode()))
    at = datetime.now(UTC).replace(microsecond=0)
    rel = Release(name, f"1.{i}.0", f"key-{name}-{i}", at, {"docker": out})
    serials.append(client.publish(open_registry(url), trust, Signers(key), rel, {}, now=at).serial)
print(json.dumps(serials))
"""


def test_eight_processes_publish_25_each_through_the_store(pg: str, tmp_path: Path) -> None:
    url = registry_url(pg)
    private, _ = write_keypair(tmp_path / "ci", None)
    key = load_signing_key(private, None)
    pub(url, key, tmp_path / "setup", "seed", "0.1.0")

    def worker(w: int) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-c",
            PUBLISHER,
            url,
            str(private),
            str(tmp_path / f"state-{w}"),
            str(w),
            "25",
        ]
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    workers = [worker(w) for w in range(8)]
    serials: list[int] = []
    for proc in workers:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        mine = json.loads(out)
        assert mine == sorted(mine) and len(set(mine)) == 25  # each worker saw its versions grow
        serials += mine
    # the seed's publish set the registry up (1) and committed (2); then one commit each
    assert len(set(serials)) == 200 and min(serials) == 3 and max(serials) == 202
    snap = client.read(open_registry(url), trust(key, tmp_path / "reader"))
    assert sum(len(snap.image(f"w{w}").versions) for w in range(8)) == 200
    assert timestamps(url) == list(range(1, 203))


def test_leases_by_the_databases_clock(pg: str) -> None:
    reg = open_registry(registry_url(pg))
    assert isinstance(reg, PgRegistry)
    assert reg.acquire("sha256:k", "runner-a", 3) is None
    assert reg.acquire("sha256:k", "runner-b", 3) == "runner-a"
    assert reg.acquire("sha256:k", "runner-a", 3) is None  # renewed
    time.sleep(3.5)  # runner-a died: its lease ran out
    assert reg.acquire("sha256:k", "runner-b", 3) is None
    reg.release("sha256:k", "runner-a")  # not its lease any more: nothing happens
    assert reg.acquire("sha256:k", "runner-a", 3) == "runner-b"
    reg.release("sha256:k", "runner-b")
    assert reg.acquire("sha256:k", "runner-a", 3) is None


def test_one_bakes_while_the_other_waits_for_its_publish(pg: str) -> None:
    reg = open_registry(registry_url(pg))
    assert isinstance(reg, PgRegistry)
    published: list[str] = []
    order: list[str] = []

    def done() -> str | None:
        return published[0] if published else None

    def runner(name: str) -> None:
        def waits(who: str) -> None:
            order.append(f"{name} waits for {who}")

        with leased(
            reg, "sha256:key", holder=name, published=done, seconds=6, poll=0.2, waiting=waits
        ) as got:
            if got is None:
                order.append(f"{name} bakes")
                time.sleep(2.5)  # longer than a renewal beat: the lease is renewed meanwhile
                published.append("1.0.0+1")
            else:
                order.append(f"{name} uses {got}")

    first = threading.Thread(target=runner, args=("a",))
    first.start()
    time.sleep(0.5)
    runner("b")
    first.join()
    assert order == ["a bakes", "b waits for a", "b uses 1.0.0+1"]
