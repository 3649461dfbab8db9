"""The one bake loop: parent → base → packer build → verify a fresh instance → record.

Every bakeable target goes through :func:`bake`; what differs lives in the target's
session (:class:`~bake.targets.base.TargetSession`). A derived recipe's parent comes from
the registry when it holds a good build of the parent's bake key (its exact bytes, fetched
by digest); otherwise it is baked first, unless a good local record of its bake key, with
its artifact still there, exists. Only a
verified artifact is kept (tagged, moved into place) and recorded good; a failed or
interrupted bake discards it and records nothing good. Packer runs once per bake, here,
with secrets passed as sensitive variables from the environment and redacted from all it
prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

from bake.ansible import runner_env
from bake.compile.template import Rendered, compile_plan, write_tree
from bake.errors import BakeError, ToolError, VerifyError
from bake.infra import packer
from bake.infra.process import Call, Interrupted
from bake.plan import Plan
from bake.record import BuildRecord, find_good, record_path, save
from bake.targets.base import (
    Artifact,
    BakeContext,
    BakeOptions,
    Base,
    ComparesBakes,
    Outcome,
    PackerInputs,
    Target,
    TargetSession,
    Verification,
)
from bake.ui.progress import step_of
from bake.verify.run import VerifyReport, skipped_results

PACKER_TIMEOUT = 6 * 3600.0
DEFAULTS = BakeOptions()


def work_dir(state: Path, plan: Plan) -> Path:
    return state / "work" / f"{plan.name}-{plan.target}-{plan.short_key}"


def secret_env(plan: Plan, environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Packer's environment for the recipe's secrets, and their values (to redact)."""
    env: dict[str, str] = {}
    values: list[str] = []
    for s in plan.resolved.recipe.secrets:
        value = environ.get(s.env)
        if not value:
            raise BakeError(
                f"{plan.name}: secret `{s.name}` needs the environment variable {s.env}",
                f"export {s.env}=… before the bake (it is passed to Packer as a sensitive "
                "variable and never written anywhere)",
            )
        env[f"PKR_VAR_secret_{s.name}"] = value
        values.append(value)
    return env, tuple(values)


def bake(
    target: Target, session: TargetSession, ctx: BakeContext, plan: Plan, opts: BakeOptions = DEFAULTS
) -> Outcome:
    """Bake ``plan`` (parents first) into a verified, recorded artifact."""
    if plan.target != target.name:
        raise BakeError(f"a {plan.target} plan cannot be baked by the {target.name} target")
    target.check(plan)
    if not (opts.force or opts.cold):
        cached = find_good(ctx.state, plan.name, plan.target, plan.key)
        if cached is not None and session.present(cached.artifact):
            ctx.reporter.note(f"{plan.name} {plan.version}: cached (bake key {plan.short_key})")
            return Outcome(cached, record_path(ctx.state, plan.name, plan.target, plan.key), cached=True)
    parent, parents = _parent(target, session, ctx, plan, opts)
    started = time.monotonic()  # a parent's bake has its own record and total
    run = Run(started, _stamp(ctx), str(uuid.uuid4()))
    work = work_dir(ctx.state, plan)
    if ctx.run is not None:  # in the run's journal before anything is made for the bake
        ctx.run.note(plan.name, plan.target, plan.key, work)
    base = session.base(plan, parent, opts)
    timings: dict[str, float] = dict(base.timings)
    rendered = compile_plan(plan)
    run = replace(run, byproducts=byproducts(plan, rendered))
    t0 = time.monotonic()
    with session.packer_inputs(plan, base, work) as inputs:
        events = run_packer(ctx, plan, inputs, work, rendered)
        timings["packer"] = time.monotonic() - t0
        built = session.built(plan, events, work, opts)
    timings.update(built.timings)

    def failed(report: VerifyReport | None, error: str) -> Path:
        session.discard(plan, built)
        rec = make_record(ctx, plan, "failed", built.artifact, base, timings, run, report, error)
        return save(ctx.state, rec)

    report: VerifyReport | None = None
    verification: Verification | None = None
    if opts.verify:
        try:
            verification = session.verify(plan, built)
        except VerifyError as exc:
            failed(None, exc.message)
            raise
        except BaseException:
            session.discard(plan, built)
            raise
        report = verification.report.with_skipped(skipped_results(plan.resolved.skipped))
        timings.update(verification.timings)
        if not report.ok:
            raise verify_failure(plan, report, failed(report, "verify failed"))
    artifact = session.keep(plan, built, verification)
    rec = make_record(ctx, plan, "good", artifact, base, timings, run, report, None)
    path = save(ctx.state, rec)
    ctx.reporter.note(f"{plan.name} {plan.version}: good ({(artifact.digest or artifact.id)[:19]})")
    return Outcome(rec, path, cached=False, parents=parents)


def _parent(
    target: Target, session: TargetSession, ctx: BakeContext, plan: Plan, opts: BakeOptions
) -> tuple[Artifact | None, tuple[BuildRecord, ...]]:
    """The parent's artifact to build on, and the parent records baked for it: the
    registry's build of its bake key when it has one, else a bake (or a local record)."""
    if plan.parent is None:
        return None, ()
    hit = None if opts.cold or ctx.published is None else ctx.published(plan.parent)
    if hit is not None:
        ctx.reporter.note(f"{plan.parent.name} {hit.version}: from {hit.registry} ({hit.digest[:19]})")
        return session.fetch(plan.parent, hit), ()
    out = bake(target, session, ctx, plan.parent, BakeOptions(verify=opts.verify, cold=opts.cold))
    return out.record.artifact, (*out.parents, out.record)


def verify_only(session: TargetSession, plan: Plan, ref: str) -> VerifyReport:
    """A plan's checks against an existing artifact (`bake verify --image REF`)."""
    verification = session.verify(plan, session.adopt(plan, ref))
    return verification.report.with_skipped(skipped_results(plan.resolved.skipped))


def run_packer(
    ctx: BakeContext, plan: Plan, inputs: PackerInputs, work: Path, rendered: Rendered | None = None
) -> list[tuple[float, packer.Event]]:
    """Render the template into ``work`` and run ``packer build``; the events it printed,
    each with when it arrived."""
    rendered = rendered or compile_plan(plan)
    template = write_tree(rendered, work / "template")
    env, sensitive = secret_env(plan, ctx.environ)
    if rendered.runs_on_host:  # an Ansible play: Packer starts bake's runner with this Python
        env.update(runner_env())
    tmp = (
        ctx.run.tmp
        if ctx.run is not None
        else Path(ctx.environ.get("PACKER_TMP_DIR") or ctx.state / "packer-tmp")
    )
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(inputs.env)
    env["PACKER_TMP_DIR"] = str(tmp)
    n_steps = len(step_titles(plan))
    ctx.reporter.set_label(f"{plan.name}:", n_steps)
    ctx.reporter.phase("packer build", f"{n_steps} steps{inputs.where}")
    events: list[tuple[float, packer.Event]] = []

    def on_line(line: str) -> None:
        ev = packer.parse_line(line)
        if ev is not None:
            events.append((time.monotonic(), ev))
            ctx.reporter.packer_event(ev)

    if plan.packer.has_plugins:
        ctx.runner(Call(argv=packer.init_argv(plan.packer, template), env=env, cwd=work))
    argv = packer.build_argv(plan.packer, template, inputs.variables)
    try:
        ctx.runner(Call(argv=argv, env=env, cwd=work, sensitive=sensitive, timeout=PACKER_TIMEOUT), on_line)
    except Interrupted:
        ctx.reporter.note("interrupted: Packer was asked to clean up its build; nothing recorded")
        raise
    except ToolError as exc:
        raise packer_failure(plan, [e for _, e in events], exc, inputs.console) from None
    return events


def step_titles(plan: Plan) -> dict[int, str]:
    """Step number → title, as the template numbers them: each step once (a looped one
    too), then the handlers."""
    titles = {i + 1: (s.name or s.module) for i, s in plan.resolved.steps}
    titles.update({i + 1: f"handler {h.name}" for i, h in plan.resolved.handlers})
    return titles


def packer_failure(
    plan: Plan, events: Sequence[packer.Event], exc: ToolError, console: Path | None = None
) -> ToolError:
    """Which step failed and what it printed. `console`: a VM's serial console log, shown
    when the build never got as far as an SSH connection."""
    step = None
    output: list[str] = []  # what the failing step printed (Packer relays stdout and stderr)
    connected = False
    prefix = f"{plan.name}.{plan.target}.{plan.name}:"
    for ev in events:
        if ev.type != "ui":
            continue
        connected = connected or "Connected to SSH" in ev.message
        k = step_of(ev.message)
        if k is not None and k != step:
            step, output = k, []
            continue
        if ev.data[:1] in (("message",), ("error",)):
            for raw in ev.message.splitlines():
                text = raw.strip()
                text = text.split(prefix, 1)[-1].strip() if prefix in text else text
                if text and not text.startswith(("==>", "-->", "Build ", "Some builds")):
                    output.append(text)
    where = ""
    if step is not None:
        titles = step_titles(plan)
        where = f" at step {step} of {len(titles)} ({titles.get(step, '?')})"
    errors = [e for e in packer.errors(events) if e.strip()]
    lines = output[-15:] + [e.strip().splitlines()[-1] for e in errors[-1:]]
    tail = "\n".join("  | " + x for x in lines) or exc.message
    if console is not None and not connected and console.is_file():
        kept = [x for x in console.read_text(errors="replace").splitlines() if x.strip()][-20:]
        tail += "\n  the build VM's console:\n" + "\n".join("  | " + x for x in kept)
    return ToolError(
        f"packer build of {plan.name} {plan.version} ({plan.target}) failed{where}:\n{tail}",
        f"nothing was recorded; fix the step and bake again (`bake render -t {plan.target}` "
        "shows the script)",
    )


def verify_failure(plan: Plan, report: VerifyReport, record: Path) -> VerifyError:
    """The error of a bake whose verify checks failed: which, and why (first lines)."""
    lines = [f"  ✗ {r.title}: {_first_line(r.message)}" for r in report.failed]
    return VerifyError(
        f"{plan.name} {plan.version}: {len(report.failed)} of {len(report.results)} "
        "verify checks failed:\n" + "\n".join(lines),
        f"the artifact was discarded, not recorded as good; JUnit report: {report.junit}; record: {record}",
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return "failed"


def verify_doc(plan: Plan, report: Mapping[str, Any]) -> dict[str, Any]:
    """A record's `verify`: the report, and the checks that applied. They travel with the
    image (test-result attestation), so `bake drift` can re-run them on a live instance."""
    checks = [c.model_dump(mode="json", exclude_none=True, exclude={"when"}) for c in plan.resolved.verify]
    return {**report, "checks": checks}


@dataclass(frozen=True)
class Run:
    """One bake run, for its record and provenance: when it began (monotonic, and as a
    time of day), its own id, and what it rendered."""

    monotonic: float
    started: str
    invocation_id: str
    byproducts: Mapping[str, str] = field(default_factory=dict)


def _stamp(ctx: BakeContext) -> str:
    return ctx.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def byproducts(plan: Plan, rendered: Rendered) -> dict[str, str]:
    """What a bake renders, by digest: the Packer template and step scripts
    (``packer:NAME``), and each template step's output (``rendered:SRC``)."""
    out = {f"packer:{name}": _sha(content) for name, content in sorted(rendered.files.items())}
    for f in plan.resolved.files:
        if f.source_digest:
            out["rendered:" + f.input_name.removeprefix("file:")] = f.digest
    return out


def sources(plan: Plan) -> dict[str, str]:
    """Inputs as read, where that differs from the bake key's view of them: the recipe
    file's bytes (``recipe-file:NAME``), a template step's source file (``file:SRC``)."""
    out: dict[str, str] = {}
    # the recipe was read once already; a file gone since is no input to name
    with contextlib.suppress(OSError):
        out[f"recipe-file:{plan.resolved.path.name}"] = _sha(plan.resolved.path.read_bytes())
    for f in plan.resolved.files:
        if f.source_digest:
            out[f.input_name] = f.source_digest
    return out


def make_record(
    ctx: BakeContext,
    plan: Plan,
    status: str,
    artifact: Artifact,
    base: Base,
    timings: Mapping[str, float],
    run: Run,
    report: VerifyReport | None,
    error: str | None,
) -> BuildRecord:
    total = dict(timings)
    total["total"] = time.monotonic() - run.monotonic
    verify = report.to_json() if report else {"ok": None, "skipped": error is None}
    return BuildRecord(
        status=status,
        name=plan.name,
        version=plan.version,
        target=plan.target,
        bake_key=plan.key,
        recipe_path=str(plan.resolved.path),
        packer_version=plan.packer.text,
        created=_stamp(ctx),
        inputs=dict(plan.inputs),
        artifact=artifact,
        parent=dict(base.record) if base.record else None,
        timings=total,
        verify=verify_doc(plan, verify),
        error=error,
        started=run.started,
        invocation_id=run.invocation_id,
        sources=sources(plan),
        byproducts=dict(run.byproducts),
    )


# --------------------------------------------------------------------------- reproducibility


def check_reproducible(
    target: Target, session: TargetSession, ctx: BakeContext, plan: Plan
) -> tuple[Outcome, Outcome, list[str]]:
    """Bake twice from cold (fresh state, base bootstrapped again, parents rebuilt) and
    compare the digests; name the files that differ when they do. Returns both bakes (the
    first is the one kept) and the differences."""
    if not isinstance(session, ComparesBakes):
        raise BakeError(
            f"--check-reproducible compares reproducible bakes; the {plan.target} target does not make them",
            f"drop it for -t {plan.target}",
        )
    first = bake(target, session, ctx, plan, BakeOptions(cold=True))
    second_state = ctx.state / "reproducibility-check" / plan.short_key
    ctx.reporter.note(f"{plan.name}: second cold bake in {second_state}")
    second = bake(target, session, replace(ctx, state=second_state), plan, BakeOptions(cold=True))
    same = first.record.artifact.digest == second.record.artifact.digest
    diffs = [] if same else session.differences(plan, ctx.state, second_state)
    session.restore(plan, first.record.artifact)  # the first bake is the one kept
    return first, second, diffs
