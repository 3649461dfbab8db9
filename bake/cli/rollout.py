"""Rollout commands: rollout (and --undo), deployments, reconcile."""

from __future__ import annotations

from typing import Annotated

import typer

from bake.app import reconcile as reconciling
from bake.app import rollout as rollouts
from bake.app.rollout import RolloutRequest, RolloutResult
from bake.deploy.deployments import Deployment, one_line
from bake.deploy.health import HealthSettings
from bake.errors import BakeError
from bake.ui.options import JsonOpt, KeyOpt, RegistryOpt, TrustOpt, access, handled, session
from bake.ui.output import is_ci, line, print_json
from bake.ui.progress import make_reporter

HealthCmdOpt = Annotated[
    str | None,
    typer.Option("--health-cmd", help="Health command (sh) instead of the one made of the image's checks."),
]
IntervalOpt = Annotated[float, typer.Option("--health-interval", help="Seconds between probes.")]
HealthTimeoutOpt = Annotated[
    float, typer.Option("--health-timeout", help="Seconds each check may take before it fails.")
]
RetriesOpt = Annotated[
    int, typer.Option("--health-retries", help="Failed probes in a row that make a task unhealthy.")
]
StartOpt = Annotated[
    float, typer.Option("--health-start-period", help="Seconds a new task's failed probes do not count.")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to converge; past them bake rolls the change back.")
]


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


def _show_record(r: Deployment) -> None:
    image = f"{r.image}@{r.version}" if r.image else r.spec
    line(
        f"{r.at}  {r.service} #{r.seq:<3} {r.action:<9} {r.outcome:<11} {image}  "
        f"{_short(r.from_digest)} → {_short(r.to_digest)}  signed by {r.signer[:16]}"
    )
    if r.outcome != "succeeded" or r.action == "replace":
        line(f"    {r.reason}")


def _show_rollout(result: RolloutResult) -> None:
    d = result.deployment
    target = f"{d.image}@{d.version} ({_short(d.to_digest)})"
    if result.outcome == rollouts.UNCHANGED:
        line(f"unchanged  {d.service} already runs {target}")
    else:
        line(f"{result.outcome:<10} {d.service}: {_short(d.from_digest)} → {target} in {result.seconds:.1f}s")
        line(f"  {d.reason}")
        line(f"  recorded as #{d.seq} of the deployment log of {d.service}, signed by {d.signer[:16]}")
    titles = ", ".join(one_line(c, 200) for c in result.checks)  # from the registry: one line each
    line(f"  health gate: {titles}")


@handled
def rollout(
    spec: Annotated[str | None, typer.Argument(help="NAME@CHANNEL or NAME@VERSION.")] = None,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="The Swarm service to create or update.")
    ] = None,
    undo: Annotated[
        str | None,
        typer.Option(
            "--undo", metavar="SVC", help="Redeploy SVC's previous known-good digest from the deployment log."
        ),
    ] = None,
    replicas: Annotated[int | None, typer.Option("--replicas", help="Number of tasks.")] = None,
    network: Annotated[
        str | None, typer.Option("--network", help="Attach to this (overlay) network.")
    ] = None,
    endpoint_mode: Annotated[
        str | None, typer.Option("--endpoint-mode", help="dnsrr (default for new services) or vip.")
    ] = None,
    health_cmd: HealthCmdOpt = None,
    health_interval: IntervalOpt = 2.0,
    health_timeout: HealthTimeoutOpt = 3.0,
    health_retries: RetriesOpt = 3,
    health_start_period: StartOpt = 5.0,
    monitor: Annotated[
        float, typer.Option("--monitor", help="Seconds Swarm watches each new task before the next one.")
    ] = 5.0,
    timeout: TimeoutOpt = 300.0,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a Swarm service's tasks with exactly the digest SPEC resolves to, after every
    check `bake resolve` makes, one task at a time, each new one taking traffic only once
    the image's own port and command checks pass; a new task that fails them makes Swarm
    roll the service back (exit 1, naming the check). Every attempt is recorded, signed, in
    the registry's deployment log; --undo SVC goes back to the previous known-good digest
    it records."""
    if undo is not None and (spec is not None or service not in (None, undo)):
        raise BakeError("--undo SVC takes no SPEC", "bake rollout --undo web", 2)
    if undo is None and (spec is None or service is None):
        raise BakeError(
            "give SPEC and --service SVC (or --undo SVC)", "bake rollout web@stable --service web", 2
        )
    req = RolloutRequest(
        service=undo or str(service),
        spec=spec,
        undo=undo is not None,
        replicas=replicas,
        network=network,
        health_cmd=health_cmd,
        health=HealthSettings(health_interval, health_timeout, health_retries, health_start_period),
        endpoint_mode=endpoint_mode,
        monitor=monitor,
        timeout=timeout,
    )
    reporter = make_reporter(plain=as_json or is_ci())
    try:
        result = rollouts.rollout(session(), access(registry, trust, key), req, reporter)
    finally:
        reporter.close()
    if as_json:
        print_json(result.to_json())
    else:
        _show_rollout(result)
    if not result.ok:
        raise typer.Exit(1)


@handled
def deployments(
    service: Annotated[str | None, typer.Argument(help="A service (default: every service).")] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The deployment log: every rollout, undo, reconcile and failed attempt, with digests,
    outcome, time and signer, verified like the rest of the registry (TUF metadata, each
    record's signature, the chain of records)."""
    log = rollouts.deployments(session(), access(registry, trust), service)
    if as_json:
        print_json(log.to_json())
        return
    for r in log.records:
        _show_record(r)
    if not log.records:
        line(f"no deployments of {service} recorded" if service else "no deployments recorded")


@handled
def reconcile(
    replace_drifted: Annotated[
        bool,
        typer.Option(
            "--replace-drifted", help="Check each task's container for drift; replace drifted ones."
        ),
    ] = False,
    timeout: TimeoutOpt = 300.0,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Roll every service labelled bake.channel=C to the head of channel C, as `bake rollout`
    would; with --replace-drifted, check each task's container like `bake drift` and
    replace drifted ones with fresh containers of the same digest (replace, don't repair).
    Exit 1 when anything failed."""
    reporter = make_reporter(plain=as_json or is_ci())
    try:
        result = reconciling.reconcile(
            session(),
            access(registry, trust, key),
            reporter,
            replace_drifted=replace_drifted,
            timeout=timeout,
        )
    finally:
        reporter.close()
    if as_json:
        print_json(result.to_json())
    else:
        for s in result.services:
            if s.error is not None:
                line(f"FAILED     {s.service} ({s.spec}): {s.error}")
                continue
            if s.rollout is not None:
                _show_rollout(s.rollout)
            for d in s.drifted:
                line(f"  drifted  {s.service}.{d.slot} container {d.container[:12]}: {d.summary}")
            if s.replaced is not None:
                line(f"  {s.replaced.outcome}: {s.replaced.reason}")
            for where in s.elsewhere:
                line(f"  not checked: {where}")
        if not result.services:
            line("no service is labelled bake.channel=CHANNEL: nothing to reconcile")
    if not result.ok:
        raise typer.Exit(1)
