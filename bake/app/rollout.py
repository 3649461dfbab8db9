"""`bake rollout`: replace a Swarm service's tasks with exactly the digest a spec resolves
to, behind a health gate made of the image's own checks; `--undo` goes back through the
deployment log; `bake deployments` reads that log.

The order makes sure nothing changes unless everything checks out:

1. the signing key (every attempt is recorded, so the log must be writable) and the
   swarm's manager;
2. the spec resolved with every check `bake resolve` makes (TUF metadata, revocation,
   the test gate, the artifact's bytes); a refusal is recorded and nothing else happens;
3. the health check from the image's signed verify checks (or ``--health-cmd``);
4. the service created or updated to ``REPO@sha256:…`` (one task at a time, the new one
   first, Swarm rolling back by itself when a new task fails), watched until it converges,
   with progress;
5. a signed record appended to the registry's deployment log in one TUF transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bake.app import deploy
from bake.app.session import RegistryAccess, Session, Writer
from bake.deploy.deployments import SUCCEEDED, Deployment, append, read_index, read_log, undo_target
from bake.deploy.health import HealthCheck, HealthSettings, failed_check, from_checks, override
from bake.deploy.swarm import (
    ENDPOINT_MODES,
    LABEL_CHANNEL,
    LABEL_DIGEST,
    LABEL_IMAGE,
    LABEL_VERSION,
    ROLLED_BACK,
    STOPPED,
    Progress,
    Service,
    ServiceSpec,
    Swarm,
    assess,
    create_argv,
    health_test,
    rolls,
    update_argv,
    validate_service,
)
from bake.errors import BakeError, TrustError
from bake.registry import client
from bake.registry.model import LAYOUT_SCHEME, format_time
from bake.targets.docker.engine import DEFAULT_SOCKET, Engine, answers

if TYPE_CHECKING:
    from bake.deploy.resolve import Resolution
    from bake.registry.client import Snapshot
    from bake.registry.model import ImageDoc
    from bake.ui.progress import Reporter

TARGET = "docker"
UNCHANGED = "unchanged"
POLL = 1.0  # seconds between looks at the service while it converges
_USAGE = 2

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class RolloutRequest:
    service: str
    spec: str | None = None  # NAME@CHANNEL or NAME@VERSION; None with undo
    undo: bool = False
    replicas: int | None = None
    network: str | None = None
    health_cmd: str | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    endpoint_mode: str | None = None
    monitor: float = 5.0
    timeout: float = 300.0
    action: str = "rollout"  # rollout | undo | reconcile (set by the use case)

    def validated(self) -> RolloutRequest:
        validate_service(self.service)
        self.health.validated()
        if self.undo == (self.spec is not None):
            raise BakeError(
                "give NAME@CHANNEL or NAME@VERSION, or --undo", "bake rollout web@stable --service web", 2
            )
        if self.replicas is not None and not 0 <= self.replicas <= 10000:
            raise BakeError(f"--replicas {self.replicas} is out of range", "give 0 to 10000", _USAGE)
        if self.endpoint_mode is not None and self.endpoint_mode not in ENDPOINT_MODES:
            raise BakeError(f"unknown endpoint mode {self.endpoint_mode!r}", "dnsrr or vip", _USAGE)
        if not 0 <= self.monitor <= 3600 or not 1 <= self.timeout <= 24 * 3600:
            raise BakeError("--monitor or --timeout is out of range", "seconds: 0–3600, 1–86400", _USAGE)
        return self


@dataclass(frozen=True)
class RolloutResult:
    outcome: str  # succeeded | rolled-back | failed | refused | unchanged
    deployment: Deployment  # what was recorded (seq 0: nothing was, the service did not change)
    checks: tuple[str, ...] = ()  # what the health gate checks
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in (SUCCEEDED, UNCHANGED)

    def to_json(self) -> dict[str, object]:
        return {
            **self.deployment.to_json(),
            "ok": self.ok,
            "outcome": self.outcome,  # the record's, or "unchanged" (nothing recorded)
            "seconds": round(self.seconds, 1),
            "health_checks": list(self.checks),
            "recorded": self.deployment.seq > 0,
        }


def manager(session: Session) -> Swarm:
    """The swarm's manager engine at DOCKER_HOST (else the default socket)."""
    host = session.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if not answers(session.runner, host):
        raise BakeError(
            f"no Docker engine answers at {host}",
            "point DOCKER_HOST at a manager of your swarm (a rollout changes Swarm services)",
        )
    return Swarm(session.runner, Engine(host))


def record(session: Session, writer: Writer, draft: Deployment) -> Deployment:
    """Append ``draft`` to its service's deployment log, signed, in one registry transaction."""
    done: list[Deployment] = []

    def mutate(snapshot: Snapshot) -> tuple[Mapping[str, ImageDoc], Mapping[str, bytes]]:
        rec, files = append(read_index(snapshot), draft, writer.signers.online)
        done.append(rec)
        return {}, files  # no image document changes: two target files

    client.transact(writer.registry, writer.trust, writer.signers, mutate, now=session.now())
    return done[-1]


def pullable(res: Resolution) -> str:
    """The image as Swarm's nodes pull it: ``REPO@sha256:…`` in an OCI registry."""
    if res.ref is None or res.ref.startswith(LAYOUT_SCHEME):
        raise BakeError(
            f"{res.name}@{res.version} is stored in an OCI layout of a dir: registry, "
            "which a swarm's nodes cannot pull",
            "publish to an OCI registry the nodes reach (--registry oci://HOST:PORT/PREFIX), "
            "and roll out from it",
        )
    return res.ref


def health_for(req: RolloutRequest, snap: Snapshot, res: Resolution) -> HealthCheck:
    from bake.app.drift import image_checks

    if req.health_cmd is not None:
        return override(req.health_cmd, req.health)
    checks = image_checks(snap, res) if "test-result" in res.attestations else []
    return from_checks(checks, req.health, f"{res.name}@{res.version}")


def rollout(
    session: Session,
    access: RegistryAccess,
    req: RolloutRequest,
    reporter: Reporter,
    *,
    sleep: Sleep = time.sleep,
) -> RolloutResult:
    """Roll ``req.service`` out to what ``req.spec`` resolves to (or back, with undo)."""
    req = req.validated()
    action = "undo" if req.undo else req.action
    writer = session.writer(access)  # no key, no rollout: the attempt could not be recorded
    swarm = manager(session)
    node = swarm.node()
    current = swarm.service(req.service)
    if current is not None and current.replicas is None:
        raise BakeError(f"{req.service} is a global service", "bake rolls out replicated services")
    read = session.reader(access)
    spec = req.spec or _undo_spec(read.snapshot, req.service, node.cluster, current)
    started = time.monotonic()
    draft = Deployment(
        service=req.service,
        action=action,
        outcome="refused",
        at=format_time(session.now()),
        spec=spec,
        from_digest=current.digest if current else None,
        cluster=node.cluster,
    )
    reporter.phase("resolve", f"{spec}: signatures, freshness, revocation, the test gate, the bytes")
    try:
        got = deploy.verified(session, access, spec, TARGET, read=read, by_digest=req.undo)
    except TrustError as e:
        _refused(session, writer, replace(draft, reason=e.message), reporter)
        raise
    res = got.resolution
    ref = pullable(res)
    health = health_for(req, got.snapshot, res)
    draft = replace(draft, image=res.name, version=res.version, to_digest=res.digest, ref=ref)
    want = _service_spec(req, res, ref, health, current)
    network = swarm.network_id(want.network) if want.network else None  # it must exist
    add_network = current is not None and network is not None and network not in current.networks
    rolling = current is None or rolls(want, current, add_network=add_network)
    if current is not None and not rolling and _settled(want, current):
        return RolloutResult(UNCHANGED, draft, health.checks, time.monotonic() - started)
    reporter.phase("rollout", f"{req.service} → {res.name}@{res.version} ({res.digest[:19]})")
    progress, timed_out = _converge(swarm, want, current, add_network, rolling, req.timeout, reporter, sleep)
    if not rolling:  # only labels or the number of replicas changed: nothing to record
        if not progress.ok:
            raise BakeError(f"{req.service} did not settle: {progress.line}")
        return RolloutResult(UNCHANGED, draft, health.checks, time.monotonic() - started)
    outcome, reason = _verdict(swarm, progress, want, current, timed_out, req.timeout)
    reporter.phase("record", f"{outcome}: a signed record in the deployment log of {req.service}")
    rec = record(session, writer, replace(draft, outcome=outcome, reason=reason))
    return RolloutResult(outcome, rec, health.checks, time.monotonic() - started)


def _undo_spec(snap: Snapshot, service: str, cluster: str, current: Service | None) -> str:
    if current is None:
        raise BakeError(
            f"no service {service!r} in this swarm: nothing to undo",
            "bake rollout NAME@VERSION --service SVC",
        )
    back = undo_target(read_log(snap, service), cluster, current.digest)
    if back.image is None or back.to_digest is None:
        raise TrustError(f"record {back.seq} of {service}'s deployment log names no image")
    return f"{back.image}@{back.to_digest}"


def _refused(session: Session, writer: Writer, draft: Deployment, reporter: Reporter) -> None:
    """Record a refusal; the refusal itself is what the user must see, so a log that cannot be
    written (e.g. the registry is what failed) only adds a note."""
    try:
        record(session, writer, draft)
    except BakeError as e:
        reporter.note(f"the refused attempt could not be recorded: {e.message}")


def _service_spec(
    req: RolloutRequest, res: Resolution, ref: str, health: HealthCheck, current: Service | None
) -> ServiceSpec:
    """What the service should be: by channel it follows the channel (`bake reconcile`);
    by version, or undone, it is pinned."""
    labels = {LABEL_IMAGE: res.name, LABEL_VERSION: res.version, LABEL_DIGEST: res.digest}
    if res.channel is not None and not req.undo:
        labels[LABEL_CHANNEL] = res.channel
    return ServiceSpec(
        name=req.service,
        ref=ref,
        health=health,
        labels=labels,
        remove_labels=() if LABEL_CHANNEL in labels else (LABEL_CHANNEL,),
        replicas=req.replicas if req.replicas is not None or current is not None else 1,
        network=req.network,
        endpoint_mode=req.endpoint_mode,
        monitor=req.monitor,
    )


def _settled(want: ServiceSpec, current: Service) -> bool:
    return (
        all(current.labels.get(k) == v for k, v in want.labels.items())
        and not any(k in current.labels for k in want.remove_labels)
        and want.replicas in (None, current.replicas)
    )


def _converge(
    swarm: Swarm,
    want: ServiceSpec,
    current: Service | None,
    add_network: bool,
    rolling: bool,
    timeout: float,
    reporter: Reporter,
    sleep: Sleep,
) -> tuple[Progress, bool]:
    """Apply the change and watch it until Swarm is done, one way or the other. Past the
    timeout an update is rolled back (a new service removed) and watched again."""
    created = current is None
    before = current.update if current else None
    swarm.apply(create_argv(want) if current is None else update_argv(want, current, add_network=add_network))
    replicas = want.replicas if want.replicas is not None else (current.replicas if current else 1) or 0
    digest, test = str(want.labels[LABEL_DIGEST]), health_test(want.health)
    deadline, shown, timed_out = time.monotonic() + timeout, "", False
    while True:
        progress = assess(
            swarm.service(want.name),
            swarm.tasks(want.name),
            digest=digest,
            health=test,
            replicas=replicas,
            before=before,
            rolling=rolling,
            created=created,
        )
        if progress.line != shown:
            reporter.note(f"{want.name}: {progress.line}")
            shown = progress.line
        if progress.done:
            return progress, timed_out
        if time.monotonic() > deadline:
            if created or timed_out:
                return Progress(True, False, f"{progress.line}; not done after {timeout:g}s"), True
            reporter.note(f"{want.name}: not converged after {timeout:g}s, rolling back")
            swarm.rollback(want.name)
            deadline, timed_out = time.monotonic() + timeout, True
        sleep(POLL)


def _why(swarm: Swarm, progress: Progress) -> str:
    """Why new tasks stopped: the failed check their health log names, else Swarm's word."""
    for task in progress.ended:
        said = failed_check(swarm.failed_probes(task.container) or []) if task.container else None
        if said:
            return f"task {task.id[:12]} failed its health check: {said}"
    for task in progress.ended:
        if task.err or task.message:
            return f"task {task.id[:12]} {task.state}: {task.err or task.message}"
    return progress.line


def _verdict(
    swarm: Swarm,
    progress: Progress,
    want: ServiceSpec,
    current: Service | None,
    timed_out: bool,
    timeout: float,
) -> tuple[str, str]:
    if progress.ok:
        return SUCCEEDED, progress.line
    why = _why(swarm, progress)
    if current is None:
        swarm.remove(want.name)
        return "failed", f"{why}; the new service was removed"
    version = current.labels.get(LABEL_VERSION, "its previous image")
    back = f"{version} ({(current.digest or current.image)[:19]})"
    if timed_out:
        return "failed", f"not converged after {timeout:g}s ({why}); rolled back to {back}"
    if progress.state == ROLLED_BACK:
        return "rolled-back", f"{why}; Swarm rolled {want.name} back to {back}"
    stopped = progress.state if progress.state in STOPPED else "stopped"
    return "failed", f"{why}; the update is {stopped.replace('_', ' ')}"


# --------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class DeploymentLog:
    records: tuple[Deployment, ...]  # by service, oldest first

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "deployments": [r.to_json() for r in self.records]}


def deployments(session: Session, access: RegistryAccess, service: str | None = None) -> DeploymentLog:
    """The deployment log of one service, or of all, as verified: TUF metadata, each
    record's signature, the chain of records."""
    snap = session.reader(access).snapshot
    index = read_index(snap)
    names = [validate_service(service)] if service else sorted(index)
    return DeploymentLog(tuple(r for name in names for r in read_log(snap, name, index)))
