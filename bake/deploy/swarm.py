"""Docker Swarm services for rollouts: what `docker service` is asked (argv, pure), what
the engine answers (parsed into frozen records), and how far a rollout has come (pure).

Every rollout sets the same update policy: one task at a time, the new task started first
and taking traffic only once its health check passes (a task joins the service's DNS when
healthy), the old one stopped after; a new task that fails makes Swarm roll the service
back to its previous spec by itself (``--update-failure-action rollback``). Images are
always given by digest and never resolved again by the engine (``--no-resolve-image``):
the digest is the one bake verified.

:class:`Swarm` runs the docker CLI through the process gateway against one engine, a
manager of the swarm (``DOCKER_HOST``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bake.deploy.health import HealthCheck
from bake.errors import BakeError, ToolError
from bake.infra.process import Runner, failure
from bake.targets.docker.engine import Engine

LABEL_IMAGE = "bake.image"  # the image's name in the registry
LABEL_VERSION = "bake.version"
LABEL_CHANNEL = "bake.channel"  # set when rolled out by channel: `bake reconcile` follows it
LABEL_DIGEST = "bake.digest"
LABELS = (LABEL_IMAGE, LABEL_VERSION, LABEL_CHANNEL, LABEL_DIGEST)
ENDPOINT_MODES = ("dnsrr", "vip")
# a task that will not run again (the desired state of a replaced task is shutdown)
ENDED = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})
ROLLED_BACK = "rollback_completed"
STOPPED = frozenset({"paused", "rollback_paused", ROLLED_BACK})  # an update that will not go on

_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # Docker's rule for service names
_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
_USAGE = 2


def validate_service(name: str) -> str:
    if not _SERVICE.fullmatch(name):
        raise BakeError(
            f"{name!r} is not a service name",
            "letters, digits, '_', '.', '-' (up to 63), starting with a letter or digit",
            _USAGE,
        )
    return name


def digest_of(image: str) -> str | None:
    found = _DIGEST.search(image)
    return found.group(1) if found else None


# --------------------------------------------------------------------------- what the engine says


@dataclass(frozen=True)
class UpdateStatus:
    state: str  # updating, paused, completed, rollback_started, rollback_paused, rollback_completed
    message: str
    started: str


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    replicas: int | None = None  # None: a global service
    networks: tuple[str, ...] = ()  # network IDs
    health: tuple[str, ...] = ()  # the health check's test, e.g. ("CMD-SHELL", "…")
    update: UpdateStatus | None = None
    version: int = 0

    @property
    def digest(self) -> str | None:
        return digest_of(self.image)


@dataclass(frozen=True)
class Task:
    id: str
    slot: int | None
    node: str
    image: str
    state: str
    desired: str
    message: str = ""
    err: str = ""
    container: str | None = None
    health: tuple[str, ...] = ()

    @property
    def digest(self) -> str | None:
        return digest_of(self.image)

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired == "running"


@dataclass(frozen=True)
class Node:
    id: str
    cluster: str
    manager: bool


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def parse_service(doc: object) -> Service:
    d = _dict(doc)
    spec = _dict(d.get("Spec"))
    container = _dict(_dict(spec.get("TaskTemplate")).get("ContainerSpec"))
    replicated = _dict(_dict(spec.get("Mode")).get("Replicated"))
    replicas = replicated.get("Replicas")
    nets = _dict(spec.get("TaskTemplate")).get("Networks") or spec.get("Networks") or []
    status = d.get("UpdateStatus")
    update = None
    if isinstance(status, dict):
        update = UpdateStatus(
            _str(status.get("State")), _str(status.get("Message")), _str(status.get("StartedAt"))
        )
    labels = {str(k): str(v) for k, v in _dict(spec.get("Labels")).items()}
    return Service(
        id=_str(d.get("ID")),
        name=_str(spec.get("Name")),
        image=_str(container.get("Image")),
        labels=labels,
        replicas=replicas if isinstance(replicas, int) else None,
        networks=tuple(_str(_dict(n).get("Target")) for n in nets if isinstance(n, dict)),
        health=_strings(_dict(container.get("Healthcheck")).get("Test")),
        update=update,
        version=int(_dict(d.get("Version")).get("Index") or 0),
    )


def parse_task(doc: object) -> Task:
    d = _dict(doc)
    status = _dict(d.get("Status"))
    container = _dict(_dict(d.get("Spec")).get("ContainerSpec"))
    slot = d.get("Slot")
    return Task(
        id=_str(d.get("ID")),
        slot=slot if isinstance(slot, int) else None,
        node=_str(d.get("NodeID")),
        image=_str(container.get("Image")),
        state=_str(status.get("State")),
        desired=_str(d.get("DesiredState")),
        message=_str(status.get("Message")),
        err=_str(status.get("Err")),
        container=_str(_dict(status.get("ContainerStatus")).get("ContainerID")) or None,
        health=_strings(_dict(container.get("Healthcheck")).get("Test")),
    )


def parse_node(swarm_info: object) -> Node:
    d = _dict(swarm_info)
    if d.get("LocalNodeState") != "active":
        raise BakeError(
            "the Docker engine is not part of a swarm (swarm mode is inactive)",
            "point DOCKER_HOST at a manager of your swarm, or start one: docker swarm init",
        )
    if d.get("ControlAvailable") is not True:
        raise BakeError(
            "the Docker engine is a swarm worker; services are managed from a manager",
            "point DOCKER_HOST at a manager node (`docker node ls` on one lists them)",
        )
    return Node(_str(d.get("NodeID")), _str(_dict(d.get("Cluster")).get("ID")), True)


# --------------------------------------------------------------------------- what bake asks


@dataclass(frozen=True)
class ServiceSpec:
    """A service as a rollout wants it."""

    name: str
    ref: str  # REPO@sha256:…, never a tag
    health: HealthCheck
    labels: Mapping[str, str] = field(default_factory=dict)
    remove_labels: tuple[str, ...] = ()
    replicas: int | None = None
    network: str | None = None
    endpoint_mode: str | None = None
    monitor: float = 5.0  # how long Swarm watches each new task before it moves on

    def policy(self) -> tuple[str, ...]:
        monitor = f"{round(self.monitor * 1000)}ms"
        return (
            *("--update-order", "start-first", "--update-parallelism", "1"),
            *("--update-failure-action", "rollback", "--update-max-failure-ratio", "0"),
            *("--update-monitor", monitor, "--rollback-order", "start-first"),
            *("--rollback-parallelism", "1", "--rollback-monitor", monitor),
        )

    def label_args(self, flag: str) -> tuple[str, ...]:
        return tuple(a for k, v in sorted(self.labels.items()) for a in (flag, f"{k}={v}"))


def _check_ref(ref: str) -> str:
    if digest_of(ref) is None or ref.startswith("-"):
        raise BakeError(f"internal error: {ref!r} is not an image pinned by digest")
    return ref


def create_argv(spec: ServiceSpec) -> tuple[str, ...]:
    argv = ["service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", spec.name]
    argv += ["--replicas", str(spec.replicas if spec.replicas is not None else 1)]
    if spec.network:
        argv += ["--network", spec.network]
    argv += ["--endpoint-mode", spec.endpoint_mode or ENDPOINT_MODES[0]]
    argv += [*spec.health.docker_args(), *spec.policy(), *spec.label_args("--label")]
    return ("docker", *argv, "--", _check_ref(spec.ref))


def update_argv(spec: ServiceSpec, current: Service, *, add_network: bool) -> tuple[str, ...]:
    argv = ["service", "update", "--detach", "--quiet", "--no-resolve-image", "--image", _check_ref(spec.ref)]
    if spec.replicas is not None:
        argv += ["--replicas", str(spec.replicas)]
    if spec.network and add_network:
        argv += ["--network-add", spec.network]
    if spec.endpoint_mode:
        argv += ["--endpoint-mode", spec.endpoint_mode]
    argv += [*spec.health.docker_args(), *spec.policy(), *spec.label_args("--label-add")]
    for label in spec.remove_labels:
        if label in current.labels:
            argv += ["--label-rm", label]
    return ("docker", *argv, "--", current.id)


def health_test(health: HealthCheck) -> tuple[str, ...]:
    return ("CMD-SHELL", health.command)


def rolls(spec: ServiceSpec, current: Service, *, add_network: bool) -> bool:
    """Whether the change replaces tasks (a new task template), or only scales or relabels."""
    return current.digest != digest_of(spec.ref) or current.health != health_test(spec.health) or add_network


# --------------------------------------------------------------------------- how far it has come


@dataclass(frozen=True)
class Progress:
    done: bool
    ok: bool
    line: str  # for people: tasks on the new image, Swarm's update state
    ended: tuple[Task, ...] = ()  # new tasks that stopped: what to ask why
    state: str = ""  # Swarm's update state, when this rollout started one


def assess(
    service: Service | None,
    tasks: Sequence[Task],
    *,
    digest: str,
    health: tuple[str, ...],
    replicas: int,
    before: UpdateStatus | None,
    rolling: bool,
    created: bool,
) -> Progress:
    """Where a rollout to ``digest`` stands. ``before`` is the update status the service had
    before this rollout (a status equal to it is an older update's, not ours)."""
    if service is None:
        return Progress(True, False, "the service is gone")
    new = [t for t in tasks if t.digest == digest and t.health == health]
    ready = [t for t in new if t.running]
    old = [t for t in tasks if t.desired == "running" and t not in new]
    ended = tuple(
        t for t in new if t.state in ENDED and not (t.desired == "shutdown" and t.state == "shutdown")
    )
    update = service.update if service.update != before else None
    state = update.state if update is not None else ""
    line = f"{len(ready)}/{replicas} tasks healthy on {digest[:19]}" + (f" ({state})" if state else "")
    counted = len(ready) >= replicas and not old
    if created:
        if ended:  # no previous spec to roll back to: a new task that stops fails the rollout
            return Progress(True, False, line, ended)
        return Progress(counted, counted, line)
    if state in STOPPED:
        return Progress(True, False, line, ended, state)
    if rolling:
        done = state == "completed" and counted
        return Progress(done, done, line, (), state)
    return Progress(counted, counted, line)


# --------------------------------------------------------------------------- the engine


class Swarm:
    """One swarm manager's engine, through the docker CLI."""

    def __init__(self, runner: Runner, engine: Engine) -> None:
        self.runner = runner
        self.engine = engine

    def _json(self, *argv: str) -> Any:
        out = self.runner(self.engine.call(*argv, timeout=120)).stdout
        try:
            return json.loads(out)
        except ValueError:
            raise ToolError(f"docker {argv[0]} did not answer JSON: {out[:200]!r}") from None

    def node(self) -> Node:
        return parse_node(self._json("info", "--format", "{{json .Swarm}}"))

    def service(self, name: str) -> Service | None:
        call = self.engine.call("service", "inspect", "--", name, check=False, timeout=120)
        result = self.runner(call)
        if result.returncode != 0:
            if "no such service" in (result.stderr + result.stdout).lower():
                return None
            raise failure(call, result)
        docs = json.loads(result.stdout)
        return parse_service(docs[0]) if docs else None

    def services(self, label: str) -> list[Service]:
        ids = self.runner(
            self.engine.call("service", "ls", "-q", "--filter", f"label={label}")
        ).stdout.split()
        return [parse_service(d) for d in self._json("service", "inspect", *ids)] if ids else []

    def tasks(self, service: str) -> list[Task]:
        call = self.engine.call("service", "ps", "-q", "--no-trunc", "--", service, check=False, timeout=120)
        result = self.runner(call)
        if result.returncode != 0:
            if "no such service" in (result.stderr + result.stdout).lower():
                return []
            raise failure(call, result)
        ids = result.stdout.split()
        return [parse_task(d) for d in self._json("inspect", "--type", "task", *ids)] if ids else []

    def network_id(self, name: str) -> str:
        call = self.engine.call("network", "inspect", "--format", "{{.ID}}", "--", name, check=False)
        result = self.runner(call)
        if result.returncode != 0:
            raise BakeError(
                f"no network {name!r} on this swarm",
                "create an attachable overlay network first: "
                f"docker network create -d overlay --attachable {name}",
            )
        return result.stdout.strip()

    def apply(self, argv: Sequence[str]) -> None:
        self.runner(self.engine.call(*argv[1:], timeout=300))

    def rollback(self, service: str) -> None:
        self.runner(
            self.engine.call("service", "rollback", "--detach", "--quiet", "--", service, check=False)
        )

    def remove(self, service: str) -> None:
        self.runner(self.engine.call("service", "rm", "--", service, check=False))

    def failed_probes(self, container: str) -> list[str] | None:
        """The outputs of a container's failed health probes (None: no such container here,
        e.g. it ran on another node)."""
        fmt = "{{json .State.Health}}"
        result = self.runner(
            self.engine.call("inspect", "--type", "container", "--format", fmt, container, check=False)
        )
        if result.returncode != 0:
            return None
        log = _dict(json.loads(result.stdout or "null")).get("Log")
        entries = [_dict(e) for e in log] if isinstance(log, list) else []
        return [_str(e.get("Output")) for e in entries if e.get("ExitCode") != 0]

    def kill(self, container: str) -> None:
        """Kill a task's container; one already stopped (Swarm may have replaced it, e.g.
        because its health check failed) is fine."""
        call = self.engine.call("kill", "--", container, check=False)
        result = self.runner(call)
        said = (result.stderr + result.stdout).lower()
        if result.returncode != 0 and "is not running" not in said and "no such container" not in said:
            raise failure(call, result)
