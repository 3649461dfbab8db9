"""`bake build`: one recipe, or a whole folder as a graph; publishing what was baked.

With a registry, a bake whose key the registry already holds (good, not revoked) is skipped
before anything starts; a parent it holds is fetched by digest, never baked again; what is
baked is published, parents first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bake import targets
from bake.app import graph
from bake.app.lease import Leases, holder_id, leased
from bake.app.session import RegistryAccess, Session
from bake.infra import process
from bake.plan import Plan, plan_recipe
from bake.recipe.models import Bootstrap
from bake.targets import loop, runs
from bake.targets.base import BakeOptions, Outcome, Target
from bake.ui.progress import PlainReporter, Reporter

if TYPE_CHECKING:
    from bake.app.publish import PublishResult


@dataclass(frozen=True)
class BuildRequest:
    recipe: Path
    target: str = "docker"
    var_files: tuple[Path, ...] = ()
    extra_vars: Mapping[str, str] = field(default_factory=dict)
    registry: RegistryAccess | None = None  # publish here (and skip what it already holds)
    force: bool = False
    verify: bool = True
    check_reproducible: bool = False
    offline: bool = False  # leave upstream package state out of the bake key


@dataclass(frozen=True)
class Reproducibility:
    same: bool
    first: str  # the digests of the two cold bakes
    second: str
    differences: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "reproducible": self.same,
            "first": self.first,
            "second": self.second,
            "differences": list(self.differences),
        }


@dataclass(frozen=True)
class BuildResult:
    plan: Plan
    outcome: Outcome | None = None  # None: the registry already had this bake key
    registry_version: str | None = None  # that version
    published: PublishResult | None = None
    reproducibility: Reproducibility | None = None
    describe: tuple[tuple[str, str], ...] = ()  # the artifact, for people

    @property
    def ok(self) -> bool:
        return self.reproducibility is None or self.reproducibility.same

    def to_json(self) -> dict[str, object]:
        if self.outcome is None:
            return {
                "ok": True,
                "cached": "registry",
                "name": self.plan.name,
                "version": self.registry_version,
                "bake_key": self.plan.key,
            }
        doc: dict[str, object] = {
            "ok": self.ok,
            "cached": self.outcome.cached,
            "record_path": str(self.outcome.record_path),
            **self.outcome.record.to_json(),
            "published": self.published.to_json() if self.published else None,
        }
        if self.reproducibility is not None:
            doc["reproducibility"] = self.reproducibility.to_json()
            doc["ok"] = self.reproducibility.same
        return doc


def upstream(offline: bool) -> Callable[[Bootstrap], Mapping[str, str]]:
    from bake.infra import upstream as up

    return up.offline if offline else up.Upstream()


def plan_build(session: Session, req: BuildRequest) -> Plan:
    (p,) = plan_recipe(
        req.recipe,
        session.packer_info(),
        targets=[req.target],
        var_files=req.var_files,
        extra_vars=req.extra_vars,
        search_path=session.search_path(),
        upstream=upstream(req.offline),
    )
    return p


def build_one(session: Session, req: BuildRequest, reporter: Reporter) -> BuildResult:
    """Plan, bake (parents first), verify, record; with a registry, publish."""
    target = targets.get(req.target)
    plan = plan_build(session, req)
    target.check(plan)  # refuses before anything runs
    if req.registry is None or req.force or req.check_reproducible:
        return _bake_one(session, req, reporter, target, plan)
    with registry_hit(session, req.registry, plan, reporter) as hit:
        if hit is not None:
            return BuildResult(plan, registry_version=hit)
        return _bake_one(session, req, reporter, target, plan)


@contextlib.contextmanager
def registry_hit(
    session: Session, access: RegistryAccess, plan: Plan, reporter: Reporter
) -> Iterator[str | None]:
    """The version the registry holds of the plan's bake key, or None: then this runner
    bakes it, holding the key's lease while the block runs if the store has leases (and
    if another runner holds it, waits for that runner's publish and yields its version)."""
    from bake.app import publish as publishing  # the registry's code only when there is one

    hit = publishing.published_version(session, access, plan.name, plan.key)
    if hit is not None:
        yield hit
        return
    registry = session.writer(access).registry
    if not isinstance(registry, Leases):
        yield None
        return
    with leased(
        registry,
        plan.key,
        holder=holder_id(),
        published=lambda: publishing.published_version(session, access, plan.name, plan.key),
        seconds=session.settings.lease_seconds,
        waiting=lambda who: reporter.note(f"{plan.name} {plan.version}: {who} is baking it; waiting"),
    ) as got:
        yield got


def _bake_one(
    session: Session, req: BuildRequest, reporter: Reporter, target: Target, plan: Plan
) -> BuildResult:
    from bake.app import publish as publishing  # the registry's code only when there is one

    run = runs.new_run(session.state, session.environ)
    ctx = replace(session.bake_context(reporter), run=run)
    if req.registry is not None and not req.check_reproducible:
        ctx = replace(ctx, published=publishing.find_published(session, req.registry))
    repro: Reproducibility | None = None
    published: PublishResult | None = None
    with process.terminate_as_interrupt(), target.session(ctx) as tsession, runs.active(run, [tsession]):
        if req.check_reproducible:
            outcome, second, diffs = loop.check_reproducible(target, tsession, ctx, plan)
            a, b = outcome.record.artifact.digest, second.record.artifact.digest
            repro = Reproducibility(a == b, str(a), str(b), tuple(diffs))
        else:
            outcome = loop.bake(target, tsession, ctx, plan, BakeOptions(force=req.force, verify=req.verify))
        if req.registry is not None and (repro is None or repro.same):
            (published,) = publishing.publish_records(
                session, [outcome.record], req.registry, {req.target: tsession}
            )
    return BuildResult(
        plan,
        outcome=outcome,
        published=published,
        reproducibility=repro,
        describe=tuple(target.describe(outcome.record.artifact)),
    )


# --------------------------------------------------------------------------- a folder


@dataclass(frozen=True)
class BuildAllRequest:
    folder: Path
    target: str = "docker"
    jobs: int = 1
    registry: RegistryAccess | None = None
    force: bool = False
    verify: bool = True
    offline: bool = False
    verbose: bool = False


@dataclass(frozen=True)
class GraphResult:
    results: tuple[graph.NodeResult, ...]
    seconds: float
    jobs: int

    @property
    def counts(self) -> dict[str, int]:
        return graph.summary(self.results)

    @property
    def ok(self) -> bool:
        return self.counts["failed"] == 0

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "jobs": self.jobs,
            "summary": self.counts,
            "results": [r.to_json() for r in self.results],
        }


def build_all(
    session: Session, req: BuildAllRequest, on_done: Callable[[graph.NodeResult], None] | None = None
) -> GraphResult:
    """Bake a folder's recipes as a graph, parents first, `jobs` independent ones at once:
    unchanged ones (by bake key, locally or in the registry) start no Packer at all."""
    from bake.app import publish as publishing  # the registry's code only when there is one

    target = targets.get(req.target)
    nodes = graph.discover(req.folder)
    info = session.packer_info()
    up = upstream(req.offline)
    search = [req.folder, *session.search_path()]
    started = time.monotonic()
    run = runs.new_run(session.state, session.environ)
    ctx = replace(session.bake_context(PlainReporter(verbose=req.verbose)), run=run)
    with process.terminate_as_interrupt(), target.session(ctx) as tsession, runs.active(run, [tsession]):

        def work(node: graph.Node) -> graph.NodeResult:
            t0 = time.monotonic()
            (p,) = plan_recipe(node.path, info, targets=[req.target], search_path=search, upstream=up)
            if req.registry is None or req.force:
                return bake_node(node, p, t0)
            with registry_hit(session, req.registry, p, PlainReporter(verbose=req.verbose)) as hit:
                if hit is not None:
                    return graph.NodeResult(
                        node.name, "cached", time.monotonic() - t0, p.version, f"registry {hit}"
                    )
                return bake_node(node, p, t0)

        def bake_node(node: graph.Node, p: Plan, t0: float) -> graph.NodeResult:
            node_ctx = replace(session.bake_context(PlainReporter(verbose=req.verbose)), run=run)
            if req.registry is not None:
                node_ctx = replace(node_ctx, published=publishing.find_published(session, req.registry))
            outcome = loop.bake(
                target, tsession, node_ctx, p, BakeOptions(force=req.force, verify=req.verify)
            )
            detail = str(outcome.record.artifact.digest or outcome.record.artifact.id)[:19]
            if req.registry is not None:
                (pub,) = publishing.publish_records(
                    session, [outcome.record], req.registry, {req.target: tsession}
                )
                detail = f"published {pub.name}@{pub.version}"
            status = "cached" if outcome.cached else "built"
            return graph.NodeResult(node.name, status, time.monotonic() - t0, p.version, detail)

        results = graph.run(nodes, work, jobs=req.jobs, on_done=on_done)
    return GraphResult(tuple(results), time.monotonic() - started, req.jobs)
