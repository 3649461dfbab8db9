"""Rollouts for real: a dockerd in swarm mode of this module's own, web v1, v2 and v3
baked, verified and published to an OCI registry, and the whole loop through the CLI.

v2 serves another page. v3 is a bake that passed its checks, but slowly: a rate limit
makes every page take about six seconds, which its verify checks wait for and a health
probe (three seconds per check) does not. That is the kind of image a health gate exists
for: the rollout starts a v3 task beside the v2 ones, the task never turns healthy, and
Swarm rolls the service back while v2 keeps serving.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from bake.cli import app
from bake.infra.packer import PackerInfo
from bake.targets.base import Outcome
from tests.conftest import RECIPES
from tests.integration.conftest import Bakes, plan_of
from tests.integration.swarm import LiveSwarm, live_swarm
from tests.integration.test_oci_registry import LiveRegistry, blob_file, own_registry  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

cli = CliRunner()
CLIENT = "bake-test-client"


def web_variant(folder: Path, version: str, server: str, *, slow: bool = False) -> Path:
    """The web recipe at another version serving another page (and, slow, rate limited)."""
    doc = yaml.safe_load((RECIPES / "web.yaml").read_text())
    doc["version"] = version
    doc["vars"]["server_name"] = server
    if slow:
        limit = {"dest": "/etc/nginx/conf.d/zz-rate.conf", "content": "limit_rate 40;\n"}
        doc["steps"].append({"name": "a rate limit of 40 bytes/s", "file": limit})
    shutil.copytree(RECIPES / "files", folder / "files", dirs_exist_ok=True)
    path = folder / f"web-{version}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass(frozen=True)
class Published:
    env: dict[str, str]  # for the CLI (DOCKER_HOST is the baking engine's)
    digests: dict[str, str]  # version -> digest
    registry: LiveRegistry


@pytest.fixture(scope="module")
def published(
    context: Bakes,
    baked_web: Outcome,
    packer_info: PackerInfo,
    own_registry: LiveRegistry,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Published:
    folder = tmp_path_factory.mktemp("rollout")
    assert cli.invoke(app, ["keygen", "--out", str(folder / "k")]).exit_code == 0
    v2 = context.bake(
        plan_of(web_variant(folder, "1.5.0", "v2.internal"), packer_info, search_path=[RECIPES])
    )
    v3 = context.bake(
        plan_of(web_variant(folder, "1.6.0", "v3.internal", slow=True), packer_info, search_path=[RECIPES])
    )
    env = {
        "BAKE_STATE_DIR": str(context.state),
        "DOCKER_HOST": context.engine.host,
        "BAKE_SIGNING_KEY": str(folder / "k.key"),
        "BAKE_TRUST": str(folder / "k.pub"),
        "BAKE_REGISTRY": own_registry.url(f"rollout{uuid.uuid4().hex[:8]}"),
    }
    digests = {}
    for outcome in (baked_web, v2, v3):
        out = bake(env, "publish", str(outcome.record_path), "--json")
        doc = json.loads(out.stdout)
        digests[outcome.record.version] = doc["digest"]
    return Published(env, digests, own_registry)


def bake(env: dict[str, str], *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result


def doc(result: Result) -> Any:
    return json.loads(result.stdout)


def page(swarm: LiveSwarm, image: str) -> str:
    """What the service answers a client on its network."""
    args = ("run", "--rm", "--network", swarm.network, "--entrypoint", "curl", image)
    return swarm.docker(*args, "-fsS", "--max-time", "10", "http://web:8080/").stdout.strip()


def running(swarm: LiveSwarm) -> dict[str, str]:
    """Task containers of the service, by container id: the image each runs."""
    ids = swarm.docker("service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", "web").stdout
    tasks = json.loads(swarm.docker("inspect", "--type", "task", *ids.split()).stdout)
    return {
        t["Status"]["ContainerStatus"]["ContainerID"]: t["Spec"]["ContainerSpec"]["Image"]
        for t in tasks
        if t["Status"]["State"] == "running"
    }


def service_image(swarm: LiveSwarm) -> str:
    return swarm.docker(
        "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", "web"
    ).stdout.strip()


def service_version(swarm: LiveSwarm) -> int:
    return int(swarm.docker("service", "inspect", "--format", "{{.Version.Index}}", "web").stdout)


class Client:
    """A container on the service's network requesting the service in a loop."""

    def __init__(self, swarm: LiveSwarm, image: str) -> None:
        self.swarm = swarm
        loop = "while :; do curl -sS --max-time 5 http://web:8080/ 2>&1 || echo FAILED; done"
        args = ("run", "-d", "--name", CLIENT, "--network", swarm.network, "--entrypoint", "sh", image)
        swarm.docker(*args, "-c", loop)

    def lines(self) -> list[str]:
        out = self.swarm.docker("logs", CLIENT)
        return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count and time.monotonic() < deadline:
            time.sleep(0.5)

    def stop(self) -> list[str]:
        seen = self.lines()
        self.swarm.docker("rm", "-f", CLIENT)
        return seen


@pytest.fixture
def swarm() -> Iterator[LiveSwarm]:
    with live_swarm() as live:
        yield live


def test_rollout_loop_on_swarm(published: Published, swarm: LiveSwarm) -> None:
    env = {**published.env, "DOCKER_HOST": swarm.engine.host}
    v1, v2, v3 = (published.digests[v] for v in ("1.4.0", "1.5.0", "1.6.0"))

    # the image as a cluster takes it: a kustomize entry pinned by digest
    k8s = bake(env, "resolve", "web@1.4.0", "--format", "k8s").stdout
    assert f'digest: "{v1}"' in k8s and 'name: "web"' in k8s

    # web v1 as a 2-replica service
    bake(env, "promote", "web@1.4.0", "stable")
    args = ("--service", "web", "--replicas", "2", "--network", swarm.network, "--json")
    first = doc(bake(env, "rollout", "web@stable", *args))
    assert first["outcome"] == "succeeded" and first["from"] is None and first["to"] == v1
    assert first["ref"] == f"{service_image(swarm)}" and service_image(swarm).endswith(f"@{v1}")
    assert "serves the site" in first["health_checks"]
    v1_ref = str(first["ref"])
    assert page(swarm, v1_ref) == "<h1>web.internal</h1>"

    # v2 rolls out while a client requests the service all along: not one request fails
    client = Client(swarm, v1_ref)
    try:
        client.wait_for(20)
        bake(env, "promote", "web@1.5.0", "stable")
        second = doc(bake(env, "rollout", "web@stable", "--service", "web", "--json"))
        client.wait_for(200)
    finally:
        seen = client.stop()
    assert second["outcome"] == "succeeded" and second["from"] == v1 and second["to"] == v2
    failed = [line for line in seen if "<h1>" not in line]
    assert len(seen) >= 200 and failed == [], f"{len(failed)} of {len(seen)} requests failed: {failed[:5]}"
    assert {"<h1>web.internal</h1>", "<h1>v2.internal</h1>"} <= set(seen)  # it switched meanwhile
    assert seen[-1] == "<h1>v2.internal</h1>"
    measured = [f"create {first['seconds']}s", f"v2 {second['seconds']}s, {len(seen)} requests, 0 failed"]

    # v3 fails its health gate: Swarm rolls back by itself, v2 still serves, exit 1 names the check
    bake(env, "promote", "web@1.6.0", "stable")
    started = time.monotonic()
    third = bake(env, "rollout", "web@stable", "--service", "web", code=1)
    measured.append(f"v3 rolled back {time.monotonic() - started:.1f}s")
    print(third.stdout)  # the text a user sees (shown with -rP)
    assert "rolled-back" in third.stdout, third.output
    assert "serves the site: no answer within 3s" in third.stdout, third.output
    assert service_image(swarm).endswith(f"@{v2}")
    assert set(running(swarm).values()) == {service_image(swarm)}
    assert page(swarm, v1_ref) == "<h1>v2.internal</h1>"

    # --undo: from the deployment log, past the failed v3 and v2 (swarm's own memory is v3)
    undone = doc(bake(env, "rollout", "--undo", "web", "--json"))
    measured.append(f"undo {undone['seconds']}s")
    assert undone["action"] == "undo" and undone["from"] == v2 and undone["to"] == v1
    assert undone["outcome"] == "succeeded" and service_image(swarm).endswith(f"@{v1}")
    assert page(swarm, v1_ref) == "<h1>web.internal</h1>"

    # the deployment log lists every attempt, with digests and outcomes
    log = doc(bake(env, "deployments", "web", "--json"))["deployments"]
    assert isinstance(log, list)
    rows = [(r["seq"], r["action"], r["from"], r["to"], r["outcome"]) for r in log]
    assert rows == [
        (1, "rollout", None, v1, "succeeded"),
        (2, "rollout", v1, v2, "succeeded"),
        (3, "rollout", v2, v3, "rolled-back"),
        (4, "undo", v2, v1, "succeeded"),
    ]
    assert len({r["signer"] for r in log}) == 1
    listing = bake(env, "deployments").stdout
    assert "web #3" in listing and "serves the site" in listing

    # a revoked version is refused before the service changes (and the refusal is recorded)
    bake(env, "revoke", "web@1.6.0", "--reason", "too slow for its health gate")
    before = service_version(swarm)
    refused = bake(env, "rollout", "web@1.6.0", "--service", "web", code=1)
    assert "revoked" in refused.output and "too slow" in refused.output
    assert service_version(swarm) == before and service_image(swarm).endswith(f"@{v1}")
    last = doc(bake(env, "deployments", "web", "--json"))["deployments"][-1]
    assert last["outcome"] == "refused" and last["to"] is None and "revoked" in last["reason"]

    # reconcile: a service labelled with a channel goes to the channel's head
    bake(env, "rollback", "web", "stable")  # stable: 1.6.0 (revoked) -> 1.5.0
    swarm.docker("service", "update", "--detach", "--label-add", "bake.channel=stable", "web")
    rec = doc(bake(env, "reconcile", "--json"))
    (web,) = rec["services"]
    assert web["ok"] and web["rollout"]["action"] == "reconcile" and web["rollout"]["to"] == v2
    assert service_image(swarm).endswith(f"@{v2}")
    again = doc(bake(env, "reconcile", "--json"))
    assert again["services"][0]["rollout"]["outcome"] == "unchanged"

    # a task container changed by hand (still healthy: only drift sees it) is replaced, not
    # repaired, by a fresh container of the same digest
    containers = running(swarm)
    assert len(containers) == 2
    tampered, untouched = sorted(containers)
    swarm.docker("exec", tampered, "sh", "-c", "printf '#!/bin/sh\\nexec sh\\n' > /usr/local/bin/backdoor")
    started = time.monotonic()
    fixed = doc(bake(env, "reconcile", "--replace-drifted", "--json"))
    measured.append(f"reconcile --replace-drifted {time.monotonic() - started:.1f}s")
    (web,) = fixed["services"]
    assert [d["container"] for d in web["drifted"]] == [tampered]
    assert (
        "1 added" in web["drifted"][0]["drift"] and "'/usr/local/bin/backdoor'" in web["drifted"][0]["drift"]
    )
    assert web["replacement"]["action"] == "replace" and web["replacement"]["outcome"] == "succeeded"
    now_running = running(swarm)
    assert tampered not in now_running and untouched in now_running and len(now_running) == 2
    assert set(now_running.values()) == {service_image(swarm)}
    for _ in range(4):
        assert page(swarm, v1_ref) == "<h1>v2.internal</h1>"
    state = swarm.docker("inspect", "--format", "{{.State.Status}}", tampered).stdout.strip()
    assert state == "exited"  # kept, stopped, for a look at what changed

    # a tampered log entry is refused: rewrite the failed v3 attempt as a success
    stored = [
        p
        for p in (published.registry.storage or Path()).rglob("data")
        if b"application/vnd.bake.deployment+json" in p.read_bytes()
    ]
    by_seq = {json.loads(base64.b64decode(json.loads(p.read_bytes())["payload"]))["seq"]: p for p in stored}
    original = by_seq[3].read_bytes()
    envelope = json.loads(original)
    payload = base64.b64decode(envelope["payload"]).replace(b'"rolled-back"', b'"succeeded"')
    by_seq[3].write_bytes(json.dumps({**envelope, "payload": base64.b64encode(payload).decode()}).encode())
    try:
        tampered_log = bake(env, "deployments", "web", code=1)
        said = tampered_log.output
        assert "has the content of" in said or "does not match its signed metadata" in said, said
        assert bake(env, "rollout", "--undo", "web", code=1).exit_code == 1  # nothing acts on it
    finally:
        by_seq[3].write_bytes(original)
    assert len(doc(bake(env, "deployments", "web", "--json"))["deployments"]) == 7
    print("measured:", "; ".join(measured))
