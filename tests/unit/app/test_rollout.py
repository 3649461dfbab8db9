"""bake.app.rollout without a swarm: a real dir: registry and a runner that answers the
docker commands a rollout makes the way a swarm manager does (tests/integration/
test_rollout.py runs the same against a real one)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bake.app import deploy
from bake.app import rollout as rollouts
from bake.app.registry import revoke
from bake.app.rollout import RolloutRequest
from bake.app.session import RegistryAccess, Session
from bake.attest.keys import load_signing_key, write_keypair
from bake.deploy.deployments import read_log
from bake.deploy.resolve import Resolution
from bake.errors import BakeError, TrustError
from bake.infra.process import Call, LineSink, Result
from bake.registry.dirstore import DirRegistry
from tests.unit.registry.regs import Setup, publish

HOST = "unix:///run/swarm.sock"
SWARM = {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n1", "Cluster": {"ID": "c1"}}
GATE = "curl -fsS http://127.0.0.1:8080/"


def ok(stdout: str = "") -> Result:
    return Result((), 0, stdout, "", 0.0)


class Manager:
    """Answers docker commands as a swarm manager would; `react` plays Swarm's part after a
    change (a create, an update, a rollback)."""

    def __init__(self, service: dict[str, Any] | None = None) -> None:
        self.service = service
        self.tasks: list[dict[str, Any]] = []
        self.health: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.react: Callable[[Manager, tuple[str, ...]], None] = lambda _m, _argv: None

    def changes(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[1:3] in (("service", "create"), ("service", "update"))]

    def __call__(self, call: Call, on_line: LineSink | None = None) -> Result:
        argv = call.argv
        self.calls.append(argv)
        assert call.env == {"DOCKER_HOST": HOST}, argv
        if argv[1] == "version":
            return ok("20.10.24")
        if argv[1] == "info":
            return ok(json.dumps(SWARM))
        if argv[1:3] == ("service", "inspect"):
            if self.service is None:
                return Result((), 1, "[]", "Error: no such service: web", 0.0)
            return ok(json.dumps([self.service]))
        if argv[1:3] == ("service", "ps"):
            return ok("".join(f"{t['ID']}\n" for t in self.tasks))
        if argv[1:4] == ("inspect", "--type", "task"):
            return ok(json.dumps([t for t in self.tasks if t["ID"] in argv]))
        if argv[1:4] == ("inspect", "--type", "container"):
            health = self.health.get(argv[-1])
            return ok(json.dumps(health)) if health else Result((), 1, "", "No such container", 0.0)
        if argv[1:3] == ("network", "inspect"):
            return Result((), 1, "", f"Error: No such network: {argv[-1]}", 0.0)
        if argv[1] == "service" and argv[2] in ("create", "update", "rollback", "rm"):
            self.react(self, argv)
            return ok()
        raise AssertionError(f"unexpected command {argv}")


def service(image: str, *, state: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ID": "svc1",
        "Version": {"Index": 1},
        "Spec": {
            "Name": "web",
            "Labels": labels or {},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Healthcheck": {"Test": ["CMD-SHELL", GATE]}}},
            "Mode": {"Replicated": {"Replicas": 1}},
        },
    }
    if state:
        doc["UpdateStatus"] = {"State": state, "StartedAt": f"at-{state}", "Message": ""}
    return doc


def task(id_: str, image: str, state: str, desired: str = "running") -> dict[str, Any]:
    return {
        "ID": id_,
        "Slot": 1,
        "NodeID": "n1",
        "DesiredState": desired,
        "Spec": {"ContainerSpec": {"Image": image, "Healthcheck": {"Test": ["CMD-SHELL", GATE]}}},
        "Status": {"State": state, "ContainerStatus": {"ContainerID": f"c-{id_}"}},
    }


@pytest.fixture
def reg(tmp_path: Path) -> Setup:
    private, _ = write_keypair(tmp_path / "ci", None)
    s = Setup(DirRegistry.at(tmp_path / "reg"), load_signing_key(private, None), tmp_path)
    publish(s, "web", "1.0.0", "a")
    publish(s, "web", "2.0.0", "b")
    return s


def session_for(reg: Setup, runner: Manager, *, key: bool = True) -> Session:
    env = {
        "BAKE_STATE_DIR": str(reg.base / "state"),
        "BAKE_REGISTRY": f"dir:{reg.base / 'reg'}",
        "BAKE_TRUST": str(reg.base / "ci.pub"),
        "DOCKER_HOST": HOST,
        **({"BAKE_SIGNING_KEY": str(reg.base / "ci.key")} if key else {}),
    }
    return dataclasses.replace(Session.load(reg.base, env), runner=runner)


def ref(reg: Setup, version: str) -> str:
    res = deploy.resolve(session_for(reg, Manager()), RegistryAccess(), f"web@{version}", "docker")
    assert res.ref is not None
    return str(res.ref)


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def set_label(self, label: str, total_steps: int) -> None: ...
    def phase(self, name: str, detail: str = "") -> None:
        self.lines.append(f"{name}: {detail}")

    def packer_event(self, event: object) -> None: ...
    def note(self, text: str) -> None:
        self.lines.append(text)

    def close(self) -> None: ...


REQ = RolloutRequest("web", "web@2.0.0", health_cmd=GATE)


def test_no_signing_key_no_rollout_and_no_docker_command(reg: Setup) -> None:
    fake = Manager()
    with pytest.raises(BakeError, match="no signing key"):
        rollouts.rollout(session_for(reg, fake, key=False), RegistryAccess(), REQ, Notes())
    assert fake.calls == []


def test_a_revoked_version_is_refused_before_the_service_changes_and_recorded(reg: Setup) -> None:
    fake = Manager(service(ref(reg, "1.0.0")))
    s = session_for(reg, fake)
    revoke(s, RegistryAccess(), "web@2.0.0", "CVE-2024-0001", cascade=False)
    with pytest.raises(TrustError, match="revoked"):
        rollouts.rollout(s, RegistryAccess(), REQ, Notes())
    assert fake.changes() == []
    (rec,) = read_log(reg.read("reader"), "web")
    assert (rec.outcome, rec.spec, rec.to_digest, rec.cluster) == ("refused", "web@2.0.0", None, "c1")
    assert rec.from_digest is not None and "CVE-2024-0001" in rec.reason


def test_a_new_service_whose_task_fails_its_gate_is_removed(reg: Setup) -> None:
    fake = Manager()
    image = ref(reg, "2.0.0")

    def swarm(m: Manager, argv: tuple[str, ...]) -> None:
        if argv[2] == "create":
            m.service = service(image)
            m.tasks = [task("t1", image, "failed", "shutdown")]
            m.health["c-t1"] = {
                "Log": [{"ExitCode": 1, "Output": "bake-health: FAILED: serves the site: exit 7\n"}]
            }
        if argv[2] == "rm":
            m.service, m.tasks = None, []

    fake.react = swarm
    notes = Notes()
    result = rollouts.rollout(session_for(reg, fake), RegistryAccess(), REQ, notes, sleep=lambda _s: None)
    assert result.outcome == "failed" and not result.ok
    assert "serves the site: exit 7" in result.deployment.reason and "removed" in result.deployment.reason
    assert ("docker", "service", "rm", "--", "web") in fake.calls
    create = fake.changes()[0]
    assert create[-2:] == ("--", image) and "--no-resolve-image" in create
    (rec,) = read_log(reg.read("reader"), "web")
    assert rec == result.deployment and rec.from_digest is None and rec.seq == 1
    assert any("0/1 tasks healthy" in line for line in notes.lines)


def test_an_update_that_does_not_converge_is_rolled_back_by_bake(reg: Setup) -> None:
    old, new = ref(reg, "1.0.0"), ref(reg, "2.0.0")
    fake = Manager(service(old, state="completed"))
    fake.tasks = [task("t1", old, "running")]

    def swarm(m: Manager, argv: tuple[str, ...]) -> None:
        if argv[2] == "update":
            m.service = service(new, state="updating")
            m.tasks.append(task("t2", new, "starting"))
        if argv[2] == "rollback":
            m.service = service(old, state="rollback_completed")

    fake.react = swarm
    req = dataclasses.replace(REQ, timeout=1.0)
    result = rollouts.rollout(
        session_for(reg, fake), RegistryAccess(), req, Notes(), sleep=lambda _s: time.sleep(0.2)
    )
    assert result.outcome == "failed" and "not converged after 1s" in result.deployment.reason
    assert ("docker", "service", "rollback", "--detach", "--quiet", "--", "web") in fake.calls


def test_the_same_digest_again_changes_nothing_and_records_nothing(reg: Setup) -> None:
    image = ref(reg, "2.0.0")
    labels = {"bake.image": "web", "bake.version": "2.0.0+1", "bake.digest": image.rpartition("@")[2]}
    fake = Manager(service(image, state="completed", labels=labels))
    result = rollouts.rollout(session_for(reg, fake), RegistryAccess(), REQ, Notes())
    assert result.outcome == "unchanged" and result.ok and fake.changes() == []
    assert result.to_json()["outcome"] == "unchanged" and not result.to_json()["recorded"]
    assert read_log(reg.read("reader"), "web") == []


def test_a_network_that_does_not_exist_is_named_before_anything_changes(reg: Setup) -> None:
    fake = Manager()
    req = dataclasses.replace(REQ, network="front")
    with pytest.raises(BakeError, match="no network 'front'"):
        rollouts.rollout(session_for(reg, fake), RegistryAccess(), req, Notes())
    assert fake.changes() == [] and read_log(reg.read("reader"), "web") == []


def test_undo_with_nothing_to_go_back_to(reg: Setup) -> None:
    fake = Manager(service(ref(reg, "2.0.0")))
    with pytest.raises(BakeError, match="nothing to undo"):
        rollouts.rollout(session_for(reg, fake), RegistryAccess(), RolloutRequest("web", undo=True), Notes())
    assert fake.changes() == []


def test_swarm_nodes_pull_from_a_registry_not_an_oci_layout() -> None:
    res = Resolution("web", "web@1", "1.0.0+1", None, "docker", "sha256:" + "a" * 64, None, None, None, "k")
    with pytest.raises(BakeError, match="cannot pull") as e:
        rollouts.pullable(dataclasses.replace(res, ref="oci-layout:///srv/r/oci/web@sha256:" + "a" * 64))
    assert e.value.hint is not None and "oci://" in e.value.hint
    assert rollouts.pullable(dataclasses.replace(res, ref="r.example/web@sha256:" + "a" * 64)).startswith(
        "r.example"
    )


@pytest.mark.parametrize(
    ("req", "said"),
    [
        (RolloutRequest("web"), "give NAME@CHANNEL"),
        (RolloutRequest("web", "web@1", undo=True), "give NAME@CHANNEL"),
        (RolloutRequest("-web", "web@1"), "not a service name"),
        (RolloutRequest("web", "web@1", replicas=-1), "--replicas"),
        (RolloutRequest("web", "web@1", endpoint_mode="ingress"), "endpoint mode"),
    ],
)
def test_bad_requests_are_usage_errors(req: RolloutRequest, said: str) -> None:
    with pytest.raises(BakeError, match=said) as e:
        req.validated()
    assert e.value.exit_code == 2
