"""bake.deploy.swarm: argv for `docker service`, its answers parsed, progress assessed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import pytest

from bake.deploy import swarm
from bake.deploy.health import HealthCheck
from bake.deploy.swarm import Service, ServiceSpec, Swarm, Task, UpdateStatus
from bake.errors import BakeError
from bake.infra.process import Call, LineSink, Result
from bake.targets.docker.engine import Engine

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
REPO = "registry.example:5000/team/web"
GATE = HealthCheck("curl -fsS http://127.0.0.1:8080/", ("serves the site",))
TEST = swarm.health_test(GATE)


def service_json(
    image: str, *, update: dict[str, str] | None = None, labels: dict[str, str] | None = None
) -> dict[str, object]:
    """A service as `docker service inspect` shows it (the fields bake reads)."""
    doc: dict[str, object] = {
        "ID": "svc1",
        "Version": {"Index": 42},
        "Spec": {
            "Name": "web",
            "Labels": labels or {},
            "TaskTemplate": {
                "ContainerSpec": {"Image": image, "Healthcheck": {"Test": list(TEST)}},
                "Networks": [{"Target": "net1"}],
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "EndpointSpec": {"Mode": "dnsrr"},
        },
    }
    if update is not None:
        doc["UpdateStatus"] = {
            "State": update["State"],
            "StartedAt": update.get("StartedAt", "t1"),
            "Message": "m",
        }
    return doc


def task(id_: str, digest: str, state: str = "running", desired: str = "running", slot: int = 1) -> Task:
    return Task(id_, slot, "node1", f"{REPO}@{digest}", state, desired, container=f"c-{id_}", health=TEST)


def test_parse_a_service() -> None:
    s = swarm.parse_service(
        service_json(f"{REPO}@{D1}", update={"State": "completed"}, labels={"bake.channel": "stable"})
    )
    assert s == Service(
        id="svc1",
        name="web",
        image=f"{REPO}@{D1}",
        labels={"bake.channel": "stable"},
        replicas=2,
        networks=("net1",),
        health=TEST,
        update=UpdateStatus("completed", "m", "t1"),
        version=42,
    )
    assert s.digest == D1
    assert swarm.parse_service(service_json("nginx:latest")).digest is None  # a tag names no digest


def test_parse_a_task() -> None:
    doc = {
        "ID": "t1",
        "Slot": 2,
        "NodeID": "node1",
        "DesiredState": "shutdown",
        "Spec": {"ContainerSpec": {"Image": f"{REPO}@{D2}", "Healthcheck": {"Test": list(TEST)}}},
        "Status": {
            "State": "complete",
            "Message": "finished",
            "ContainerStatus": {"ContainerID": "abc", "ExitCode": 0},
        },
    }
    t = swarm.parse_task(doc)
    assert (t.id, t.slot, t.digest, t.state, t.desired, t.container, t.health) == (
        "t1",
        2,
        D2,
        "complete",
        "shutdown",
        "abc",
        TEST,
    )
    assert not t.running


def test_a_node_must_be_a_manager_of_an_active_swarm() -> None:
    node = swarm.parse_node(
        {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n", "Cluster": {"ID": "c"}}
    )
    assert (node.id, node.cluster) == ("n", "c")
    with pytest.raises(BakeError, match="not part of a swarm") as e:
        swarm.parse_node({"LocalNodeState": "inactive"})
    assert e.value.hint is not None and "docker swarm init" in e.value.hint
    with pytest.raises(BakeError, match="worker"):
        swarm.parse_node({"LocalNodeState": "active", "ControlAvailable": False})


@pytest.mark.parametrize("name", ["web", "web_1.blue-2", "A" * 63])
def test_service_names(name: str) -> None:
    assert swarm.validate_service(name) == name


@pytest.mark.parametrize("name", ["", "-rm", "web/1", "a b", "A" * 64, "../x"])
def test_bad_service_names_are_usage_errors(name: str) -> None:
    with pytest.raises(BakeError) as e:
        swarm.validate_service(name)
    assert e.value.exit_code == 2


SPEC = ServiceSpec(
    name="web",
    ref=f"{REPO}@{D2}",
    health=GATE,
    labels={"bake.image": "web", "bake.digest": D2},
    remove_labels=("bake.channel",),
    replicas=2,
    network="front",
)


def test_create_pins_the_digest_and_the_update_policy() -> None:
    argv = swarm.create_argv(SPEC)
    assert argv[:3] == ("docker", "service", "create") and argv[-2:] == ("--", f"{REPO}@{D2}")
    joined = " ".join(argv)
    for expected in (
        "--no-resolve-image",
        "--update-order start-first",
        "--update-failure-action rollback",
        "--update-max-failure-ratio 0",
        "--rollback-order start-first",
        "--endpoint-mode dnsrr",
        "--network front",
        "--replicas 2",
        "--label bake.digest=" + D2,
    ):
        assert expected in joined
    assert argv[argv.index("--health-cmd") + 1] == GATE.command


def test_update_adds_and_removes_only_what_differs() -> None:
    current = swarm.parse_service(service_json(f"{REPO}@{D1}", labels={"bake.channel": "stable"}))
    argv = swarm.update_argv(SPEC, current, add_network=True)
    assert argv[-2:] == ("--", "svc1") and argv[argv.index("--image") + 1] == f"{REPO}@{D2}"
    assert "--network-add" in argv and argv[argv.index("--label-rm") + 1] == "bake.channel"
    pinned = swarm.update_argv(replace(SPEC, network=None), replace(current, labels={}), add_network=False)
    assert "--network-add" not in pinned and "--label-rm" not in pinned


def test_a_tag_never_reaches_a_service() -> None:
    with pytest.raises(BakeError, match="not an image pinned by digest"):
        swarm.create_argv(replace(SPEC, ref=f"{REPO}:latest"))


def test_what_replaces_tasks() -> None:
    current = swarm.parse_service(service_json(f"{REPO}@{D2}"))
    assert not swarm.rolls(SPEC, current, add_network=False)
    assert swarm.rolls(SPEC, current, add_network=True)
    assert swarm.rolls(replace(SPEC, ref=f"{REPO}@{D1}"), current, add_network=False)
    assert swarm.rolls(replace(SPEC, health=HealthCheck("true", ("x",))), current, add_network=False)


# --------------------------------------------------------------------------- progress


def assess(service: Service | None, tasks: Sequence[Task], **kw: object) -> swarm.Progress:
    args: dict[str, object] = {
        "digest": D2,
        "health": TEST,
        "replicas": 2,
        "before": None,
        "rolling": True,
        "created": False,
    }
    args.update(kw)
    return swarm.assess(service, tasks, **args)  # type: ignore[arg-type]  # the keywords above


def svc(digest: str, state: str | None = None, started: str = "t2") -> Service:
    update = {"State": state, "StartedAt": started} if state else None
    return swarm.parse_service(service_json(f"{REPO}@{digest}", update=update))


def test_an_update_is_done_once_swarm_completed_it_and_every_slot_runs_the_new_digest() -> None:
    before = UpdateStatus("completed", "m", "t1")  # the previous update's
    old = [task("a", D1), task("b", D1, slot=2)]
    stale = assess(svc(D2, "completed", started="t1"), old, before=before)
    assert not stale.done and stale.line == f"0/2 tasks healthy on {D2[:19]}"
    half = assess(svc(D2, "updating"), [task("c", D2), *old[1:]], before=before)
    assert not half.done and "(updating)" in half.line
    almost = assess(svc(D2, "updating"), [task("c", D2), task("d", D2, slot=2)], before=before)
    assert not almost.done  # Swarm still watches the last task (--update-monitor)
    done = assess(
        svc(D2, "completed"), [task("c", D2), task("d", D2, slot=2), task("a", D1, "shutdown", "shutdown")]
    )
    assert done.done and done.ok


def test_a_rolled_back_update_names_the_task_that_stopped() -> None:
    tasks = [task("a", D1), task("b", D1, slot=2), task("c", D2, "complete", "shutdown")]
    p = assess(svc(D1, "rollback_started"), tasks)
    assert not p.done
    p = assess(svc(D1, "rollback_completed"), tasks)
    assert p.done and not p.ok and p.state == "rollback_completed" and [t.id for t in p.ended] == ["c"]


def test_a_new_service_fails_as_soon_as_a_task_stops() -> None:
    starting = assess(svc(D2), [task("a", D2, "starting")], created=True)
    assert not starting.done
    failed = assess(svc(D2), [task("a", D2, "failed", "shutdown"), task("b", D2)], created=True)
    assert failed.done and not failed.ok and [t.id for t in failed.ended] == ["a"]
    up = assess(svc(D2), [task("a", D2), task("b", D2, slot=2)], created=True)
    assert up.done and up.ok


def test_relabelling_or_scaling_replaces_nothing() -> None:
    p = assess(
        svc(D2, "completed", started="t1"),
        [task("a", D2)],
        rolling=False,
        replicas=1,
        before=UpdateStatus("completed", "m", "t1"),
    )
    assert p.done and p.ok
    assert assess(None, []).done and not assess(None, []).ok


# --------------------------------------------------------------------------- the engine, through a runner


class Docker:
    """A runner that answers docker commands from a table (argv prefix -> result)."""

    def __init__(self, answers: dict[tuple[str, ...], Result]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, call: Call, on_line: LineSink | None = None) -> Result:
        self.calls.append(call.argv)
        assert call.env == {"DOCKER_HOST": "unix:///run/swarm.sock"}
        for prefix, result in self.answers.items():
            if call.argv[: len(prefix)] == prefix:
                return result
        raise AssertionError(f"unexpected command {call.argv}")


def answer(stdout: str = "", rc: int = 0, stderr: str = "") -> Result:
    return Result((), rc, stdout, stderr, 0.0)


def test_a_missing_service_is_none_and_other_errors_are_errors() -> None:
    fake = Docker({("docker", "service", "inspect"): answer("[]", 1, "Error: no such service: web")})
    assert Swarm(fake, Engine("unix:///run/swarm.sock")).service("web") is None
    broken = Docker({("docker", "service", "inspect"): answer("", 1, "permission denied")})
    with pytest.raises(BakeError, match="permission denied"):
        Swarm(broken, Engine("unix:///run/swarm.sock")).service("web")


def test_tasks_and_their_failed_probes() -> None:
    doc = {"ID": "t1", "Slot": 1, "Status": {"State": "running"}, "DesiredState": "running"}
    health = {
        "Status": "unhealthy",
        "Log": [{"ExitCode": 0, "Output": "ok"}, {"ExitCode": 1, "Output": "bad"}],
    }
    fake = Docker(
        {
            ("docker", "service", "ps"): answer("t1\n"),
            ("docker", "inspect", "--type", "task"): answer(json.dumps([doc])),
            ("docker", "inspect", "--type", "container", "--format", "{{json .State.Health}}", "c1"): answer(
                json.dumps(health)
            ),
            ("docker", "inspect", "--type", "container"): answer("", 1, "No such container"),
        }
    )
    s = Swarm(fake, Engine("unix:///run/swarm.sock"))
    assert [t.id for t in s.tasks("web")] == ["t1"]
    assert s.failed_probes("c1") == ["bad"]
    assert s.failed_probes("elsewhere") is None


def test_a_missing_network_says_how_to_make_one() -> None:
    fake = Docker({("docker", "network", "inspect"): answer("", 1, "Error: No such network: front")})
    with pytest.raises(BakeError, match="no network 'front'") as e:
        Swarm(fake, Engine("unix:///run/swarm.sock")).network_id("front")
    assert e.value.hint is not None and "--attachable front" in e.value.hint
