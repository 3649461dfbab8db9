"""`bake reconcile`: every service that follows a channel goes to the channel's head; with
``--replace-drifted``, task containers that drifted from their image are replaced, never
repaired.

A service follows channel C when it carries the label ``bake.channel=C`` (a rollout by
channel sets it; anyone may) and names its image with ``bake.image`` (else the image's
repository name is taken). It is rolled out exactly as ``bake rollout NAME@C`` would:
every check, the health gate, a record in the deployment log; a service already at the
head is left alone, unrecorded.

Then each running task's container on this node is checked as ``bake drift`` checks one
(the live filesystem against the image's signed file manifest, then the image's own verify
checks). A drifted container is killed; Swarm starts a fresh container of the same digest
in its slot while the other replicas serve, and the killed one is left stopped, its
filesystem there to inspect, until Swarm prunes its task history. Containers on other
nodes are listed, not checked: run reconcile with DOCKER_HOST at that node's engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bake.app.rollout import (
    POLL,
    RolloutRequest,
    RolloutResult,
    Sleep,
    manager,
    record,
    rollout,
)
from bake.app.session import RegistryAccess, Session
from bake.deploy.deployments import SUCCEEDED, Deployment
from bake.deploy.health import HealthSettings
from bake.deploy.swarm import LABEL_CHANNEL, LABEL_IMAGE, LABEL_VERSION, Node, Service, Swarm, Task
from bake.errors import BakeError
from bake.registry.model import format_time

if TYPE_CHECKING:
    from bake.app.drift import DriftResult
    from bake.ui.progress import Reporter


@dataclass(frozen=True)
class TaskDrift:
    task: str
    slot: int | None
    container: str
    summary: str  # what differs, for people (paths quoted)

    def to_json(self) -> dict[str, object]:
        return {"task": self.task, "slot": self.slot, "container": self.container, "drift": self.summary}


@dataclass(frozen=True)
class Reconciled:
    service: str
    spec: str
    rollout: RolloutResult | None = None
    error: str | None = None
    drifted: tuple[TaskDrift, ...] = ()
    elsewhere: tuple[str, ...] = ()  # tasks on other nodes: not checked here
    replaced: Deployment | None = None  # the record of the replacement, if any

    @property
    def ok(self) -> bool:
        replaced = self.replaced is None or self.replaced.outcome == SUCCEEDED
        return self.error is None and self.rollout is not None and self.rollout.ok and replaced

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "spec": self.spec,
            "ok": self.ok,
            "error": self.error,
            "rollout": self.rollout.to_json() if self.rollout else None,
            "drifted": [d.to_json() for d in self.drifted],
            "not_checked": list(self.elsewhere),
            "replacement": self.replaced.to_json() if self.replaced else None,
        }


@dataclass(frozen=True)
class ReconcileResult:
    services: tuple[Reconciled, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.services)

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "services": [s.to_json() for s in self.services]}


def image_name(service: Service) -> str:
    """The image a service runs, by its registry name: its label, else its repository's last part."""
    named = service.labels.get(LABEL_IMAGE)
    if named:
        return named
    return service.image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]


def reconcile(
    session: Session,
    access: RegistryAccess,
    reporter: Reporter,
    *,
    replace_drifted: bool = False,
    health: HealthSettings | None = None,
    timeout: float = 300.0,
    sleep: Sleep = time.sleep,
) -> ReconcileResult:
    """Roll each channel-following service to its channel's head; then, if asked, replace
    drifted task containers. One service failing does not stop the others."""
    swarm = manager(session)
    node = swarm.node()
    done = []
    for service in sorted(swarm.services(LABEL_CHANNEL), key=lambda s: s.name):
        spec = f"{image_name(service)}@{service.labels[LABEL_CHANNEL]}"
        req = RolloutRequest(
            service.name, spec, action="reconcile", health=health or HealthSettings(), timeout=timeout
        )
        reporter.phase("reconcile", f"{service.name} follows {spec}")
        try:
            rolled = rollout(session, access, req, reporter, sleep=sleep)
        except BakeError as e:
            done.append(Reconciled(service.name, spec, error=e.message))
            continue
        if not replace_drifted or not rolled.ok:
            done.append(Reconciled(service.name, spec, rolled))
            continue
        drifted, elsewhere, replaced = _replace_drifted(
            session, access, swarm, node, service.name, reporter, sleep
        )
        done.append(Reconciled(service.name, spec, rolled, None, drifted, elsewhere, replaced))
    return ReconcileResult(tuple(done))


def _summary(result: DriftResult) -> str:
    files = result.files
    parts = [f"{len(files.added)} added, {len(files.removed)} removed, {len(files.changed)} changed"]
    paths = [e.path for e in files.added] + [e.path for e in files.removed] + [c.path for c in files.changed]
    if paths:
        parts.append("e.g. " + ", ".join(repr(p) for p in paths[:3]))
    if result.checks is not None and result.checks.failed:
        parts.append(f"{len(result.checks.failed)} verify check(s) failed")
    return "; ".join(parts)


def _replace_drifted(
    session: Session,
    access: RegistryAccess,
    swarm: Swarm,
    node: Node,
    name: str,
    reporter: Reporter,
    sleep: Sleep,
) -> tuple[tuple[TaskDrift, ...], tuple[str, ...], Deployment | None]:
    from bake.app.drift import DriftRequest, drift

    service = swarm.service(name)
    if service is None or service.digest is None:
        raise BakeError(f"{name} disappeared while it was reconciled")
    image = f"{image_name(service)}@{service.digest}"
    drifted: list[TaskDrift] = []
    elsewhere: list[str] = []
    for task in sorted((t for t in swarm.tasks(name) if t.running), key=lambda t: t.slot or 0):
        if task.node != node.id or task.container is None:
            elsewhere.append(f"task {task.id[:12]} runs on node {task.node[:12]}")
            continue
        reporter.phase("drift", f"{name}.{task.slot} (container {task.container[:12]}) vs {image[:40]}")
        result = drift(session, access, DriftRequest(image, f"docker://{task.container}"))
        if not result.clean:
            drifted.append(TaskDrift(task.id, task.slot, task.container, _summary(result)))
            reporter.note(f"{name}.{task.slot}: drifted ({drifted[-1].summary})")
    if not drifted:
        return (), tuple(elsewhere), None
    started = format_time(session.now())
    writer = session.writer(access)
    for d in drifted:
        swarm.kill(d.container)
    ok, line = _replaced(swarm, service, {d.container for d in drifted}, reporter, sleep)
    what = "; ".join(f"{name}.{d.slot} (container {d.container[:12]}): {d.summary}" for d in drifted)
    rec = record(
        session,
        writer,
        Deployment(
            service=name,
            action="replace",
            outcome=SUCCEEDED if ok else "failed",
            at=started,
            spec=image,
            image=image_name(service),
            version=service.labels.get(LABEL_VERSION),
            from_digest=service.digest,
            to_digest=service.digest,
            ref=service.image,
            reason=f"drifted, replaced by fresh containers of the same digest: {what}; {line}",
            cluster=node.cluster,
        ),
    )
    return tuple(drifted), tuple(elsewhere), rec


def _replaced(
    swarm: Swarm,
    service: Service,
    killed: set[str],
    reporter: Reporter,
    sleep: Sleep,
    timeout: float = 300.0,
) -> tuple[bool, str]:
    """Wait until every slot runs a healthy task again, none of them in a killed container."""
    replicas = service.replicas or 0
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        fresh: list[Task] = [t for t in swarm.tasks(service.name) if t.running and t.container not in killed]
        line = f"{len(fresh)}/{replicas} tasks healthy in fresh containers"
        if line != shown:
            reporter.note(f"{service.name}: {line}")
            shown = line
        if len(fresh) >= replicas:
            return True, line
        if time.monotonic() > deadline:
            return False, f"{line} after {timeout:g}s"
        sleep(POLL)
