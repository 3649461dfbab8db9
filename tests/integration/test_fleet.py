"""Many machines, one registry: fresh runners build on published parents, and a fleet of
runners bakes a graph against one OCI registry and one PostgreSQL store — every bake key
baked once, a killed runner's lease taken over, the TUF metadata whole.

Runners are separate processes with their own state folders and their own, empty Docker
engines (tests/integration/engines.py); the parent image comes from the session's bake of
debian-base, published into each test's registry first.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tuf.ngclient import Updater
from typer.testing import CliRunner

from bake.attest.keys import write_keypair
from bake.cli import app
from bake.deploy.resolve import resolve
from bake.deploy.verified import check_attestations
from bake.infra.packer import PackerInfo
from bake.record import find_good, record_path
from bake.registry import client
from bake.registry.backend import open_registry
from bake.registry.pgstore import PgLocation
from bake.registry.updater import METADATA_URL, TARGETS_URL, RegistryFetcher
from bake.targets.base import Outcome
from bake.targets.docker import engine as docker
from tests.conftest import RECIPES, ROOT
from tests.integration.conftest import Bakes, plan_of
from tests.integration.engines import fresh_engines
from tests.integration.postgres import registry_url

pytestmark = pytest.mark.integration
cli = CliRunner()

# the graph: debian-base (published before) and five children that need no network
CHILDREN = {"c1": "debian-base", "c2": "debian-base", "c3": "c1", "c4": "c1", "c5": "c3"}
LEASE_SECONDS = 8


def child(name: str, parent: str, pause: int = 0) -> str:
    return f"""\
name: {name}
version: 1.0.0
extends: {parent}
steps:
  - name: marker
    shell: echo {name} > /etc/{name}.marker{f" && sleep {pause}" if pause else ""}
verify:
  - file: {{path: /etc/{name}.marker, contains: {name}}}
"""


def recipes(folder: Path, names: dict[str, str], pause: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "debian-base.yaml").write_text((RECIPES / "debian-base.yaml").read_text())
    for name, parent in names.items():
        (folder / f"{name}.yaml").write_text(child(name, parent, pause))
    return folder


def env_of(keys: Path, registry: str, state: Path, host: str) -> dict[str, str]:
    return {
        **os.environ,
        "BAKE_REGISTRY": registry,
        "BAKE_SIGNING_KEY": str(keys / "ci.key"),
        "BAKE_TRUST": str(keys / "ci.pub"),
        "BAKE_KEY_PASSPHRASE": "",
        "BAKE_STATE_DIR": str(state),
        "DOCKER_HOST": host,
        "PACKER_TMP_DIR": str(state / "packer-tmp"),
        "BAKE_LEASE_SECONDS": str(LEASE_SECONDS),
    }


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fleet-keys")
    write_keypair(folder / "ci", None)
    return folder


def publish_base(context: Bakes, baked_web: Outcome, keys: Path, registry: str) -> str:
    """Publish the session's debian-base bake (from the machine's engine); its digest."""
    (base,) = [r for r in baked_web.parents if r.name == "debian-base"]
    path = record_path(context.state, base.name, base.target, base.bake_key)
    env = env_of(keys, registry, context.state, context.engine.host)
    result = cli.invoke(app, ["publish", str(path), "--json"], env=env)
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["digest"])


def test_a_fresh_runner_builds_on_the_published_parent(
    context: Bakes, baked_web: Outcome, packer_info: PackerInfo, keys: Path, tmp_path: Path
) -> None:
    registry = f"dir:{tmp_path / 'registry'}"
    base_digest = publish_base(context, baked_web, keys, registry)
    folder = recipes(tmp_path / "recipes", {"c1": "debian-base"})
    assert plan_of(folder / "debian-base.yaml", packer_info).key == baked_web.parents[0].bake_key
    fresh = tmp_path / "fresh-runner"
    with fresh_engines(1) as (eng,):
        env = env_of(keys, registry, fresh, eng.host)
        # the plan a CI system fans out: only the child, the parent is published
        planned = cli.invoke(app, ["plan", "--all", str(folder), "--format", "github-matrix"], env=env)
        assert planned.exit_code == 0, planned.output
        matrix = json.loads(planned.stdout)
        assert [(e["name"], e["wave"]) for e in matrix["include"]] == [("c1", 1)]
        result = cli.invoke(app, ["build", str(folder / "c1.yaml"), "--json"], env=env)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        pulled = docker.image_id(context.runner, eng, "bake/debian-base:1.0.0")
    # the parent's published bytes, pulled by digest: no bootstrap, no Packer run, no record
    parent = doc["parent"]
    assert parent["published"] == "1.0.0+1" and parent["digest"] == base_digest
    assert pulled == baked_web.parents[0].artifact.id
    assert not (fresh / "bootstrap").exists() and not (fresh / "records" / "debian-base").exists()
    assert [p.name for p in (fresh / "work").iterdir()] == [f"c1-docker-{doc['bake_key'][7:19]}"]
    # the child is published with the parent's published digest in its provenance
    snap = client.read(open_registry(registry), client.Trust((keys / "ci.pub",), tmp_path / "reader"))
    version = doc["published"]["version"]
    build = snap.image("c1").versions[version]
    assert build.parent == "debian-base@1.0.0+1"
    envelope = snap.attestation("c1", version, "provenance", build.attestations["provenance"])
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    assert base_digest.removeprefix("sha256:") in json.dumps(statement["predicate"])


def _holders(url: str) -> dict[str, str]:
    loc = PgLocation.parse(url)
    with psycopg.connect(loc.conninfo, autocommit=True) as db:
        rows = db.execute("SELECT key, holder FROM bake_leases WHERE repo = %s", (loc.repo,)).fetchall()
    return {str(k): str(h) for k, h in rows}


def _kill_one_and_wait(
    runners: list[subprocess.Popen[str]], url: str, keys: set[str]
) -> tuple[int, str, dict[int, dict[str, Any]]]:
    """SIGKILL the first runner seen holding a lease, in the middle of its bake; wait for
    the others. (victim, the key it held, the others' --json documents)"""
    by_pid = {str(r.pid): i for i, r in enumerate(runners)}
    victim, victim_key, deadline = None, None, time.monotonic() + 600
    while victim is None and time.monotonic() < deadline:
        assert any(r.poll() is None for r in runners), "every runner ended before one took a lease"
        for key, holder in _holders(url).items():
            pid = holder.split(":")[1]
            if pid in by_pid and key in keys:
                victim, victim_key = by_pid[pid], key
                break
        time.sleep(0.2)
    assert victim is not None and victim_key is not None, "no runner took a lease"
    time.sleep(2)  # well inside its bake (each step sleeps 4 s)
    os.killpg(runners[victim].pid, signal.SIGKILL)
    outputs = {}
    for i, runner in enumerate(runners):
        out, err = runner.communicate(timeout=1200)
        if i != victim:
            assert runner.returncode == 0, err[-4000:]
            outputs[i] = json.loads(out)
    assert runners[victim].returncode == -signal.SIGKILL
    return victim, victim_key, outputs


def test_a_fleet_bakes_every_key_once_and_survives_a_killed_runner(
    context: Bakes, baked_web: Outcome, packer_info: PackerInfo, pg: str, keys: Path, tmp_path: Path
) -> None:
    host = os.environ.get("BAKE_TEST_REGISTRY")
    if not host:
        pytest.fail("the fleet test needs BAKE_TEST_REGISTRY (make test starts a docker-registry)")
    prefix = f"fleet{os.getpid()}x{int(time.time()) % 100000}"
    url = registry_url(pg, f"oci://{host}/{prefix}")
    publish_base(context, baked_web, keys, url)
    folder = recipes(tmp_path / "recipes", CHILDREN, pause=4)
    keyed = {n: plan_of(folder / f"{n}.yaml", packer_info).key for n in CHILDREN}
    states = [tmp_path / f"runner-{i}" for i in range(4)]
    with fresh_engines(4) as engines:

        def start(state: Path, eng: docker.Engine) -> subprocess.Popen[str]:
            argv = [sys.executable, "-m", "bake", "build", "--all", str(folder), "-j", "2", "--json"]
            env = env_of(keys, url, state, eng.host)
            out, err = subprocess.PIPE, subprocess.PIPE
            return subprocess.Popen(
                argv, cwd=ROOT, env=env, start_new_session=True, text=True, stdout=out, stderr=err
            )

        runners = [start(state, eng) for state, eng in zip(states, engines, strict=True)]
        try:
            victim, victim_key, outputs = _kill_one_and_wait(runners, url, set(keyed.values()))
        finally:  # on a failure too: no runner outlives the test, no pipe is left open
            for runner in runners:
                if runner.poll() is None:
                    os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
                for pipe in (runner.stdout, runner.stderr):
                    if pipe is not None:
                        pipe.close()
    # every bake key baked exactly once, across all runners (the killed one's finished ones too)
    for name, key in keyed.items():
        baked = [i for i, state in enumerate(states) if find_good(state, name, "docker", key) is not None]
        assert len(baked) == 1, (name, baked)
        if key == victim_key:
            assert baked != [victim]  # another runner took its lease over and finished it
    for doc in outputs.values():
        assert doc["ok"] and {r["name"] for r in doc["results"]} == {*CHILDREN, "debian-base"}
    # all published, the TUF metadata whole: bake's reader, the gate, python-tuf's own client
    snap = client.read(open_registry(url), client.Trust((keys / "ci.pub",), tmp_path / "reader"))
    assert sorted(snap.names()) == sorted([*CHILDREN, "debian-base"])
    for name in CHILDREN:
        assert list(snap.image(name).versions) == ["1.0.0+1"]
        check_attestations(resolve(snap, f"{name}@1.0.0", "docker"), snap)
    bootstrap = open_registry(url).read_metadata("1.root.json")
    assert bootstrap is not None
    with tempfile.TemporaryDirectory() as cache:
        updater = Updater(
            cache, METADATA_URL, target_dir=cache, target_base_url=TARGETS_URL,
            fetcher=RegistryFetcher(open_registry(url)), bootstrap=bootstrap,
        )  # fmt: skip
        for name in CHILDREN:
            assert updater.get_targetinfo(f"images/{name}.json") is not None
    assert _holders(url) == {}  # every lease released (the killed runner's was taken over)
