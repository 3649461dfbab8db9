"""One bake, end to end: parent → base → render → packer build → verify → record.

A derived recipe's parent is baked first when no good record of its bake key (with its
image still present) exists. The version tag (`bake/NAME:VERSION`) is applied only after
verification passes, so it never points at an unverified image; Packer's own tag is the
bake key (`bake/NAME:key-…`), which is removed again when verification fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bake import bootstrap, docker, packer, reproducible
from bake.compile import compile_plan, image_repository, write_tree
from bake.docker import Engine
from bake.errors import BakeError, ToolError, VerifyError
from bake.plan import Plan, upstream_pins
from bake.process import Call, Interrupted, Runner
from bake.progress import PlainReporter
from bake.record import BuildRecord, find_good, save
from bake.verify import VerifyReport, verify_container_image


@dataclass(frozen=True)
class BuildContext:
    runner: Runner
    engine: Engine
    state: Path
    reporter: PlainReporter
    environ: Mapping[str, str]
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class BuildOptions:
    force: bool = False  # rebuild even when a good record of the same key exists
    verify: bool = True
    normalize: bool = True  # rewrite the image deterministically (reproducible digest)
    cold: bool = False  # bootstrap the base again and rebuild parents (no reuse at all)


@dataclass(frozen=True)
class Outcome:
    record: BuildRecord
    record_path: Path
    cached: bool
    parents: tuple[BuildRecord, ...] = ()


def _now(ctx: BuildContext) -> str:
    return ctx.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reusable(ctx: BuildContext, plan: Plan) -> BuildRecord | None:
    """A good record of this exact bake key whose image is still in the engine."""
    rec = find_good(ctx.state, plan.name, plan.target, plan.key)
    if rec is None:
        return None
    image = str(rec.artifact.get("image_id", ""))
    if not image or docker.image_id(ctx.runner, ctx.engine, image) is None:
        return None
    return rec


def secret_env(plan: Plan, environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
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


def bake(ctx: BuildContext, plan: Plan, opts: BuildOptions = BuildOptions()) -> Outcome:
    if plan.target != "docker":
        raise BakeError(
            f"bake.build bakes the docker target, not {plan.target}",
            "the qemu target is baked by bake.vmbuild; cloud targets render with `bake render`",
        )
    if not opts.force and not opts.cold:
        cached = reusable(ctx, plan)
        if cached is not None:
            ctx.reporter.note(f"{plan.name} {plan.version}: cached (bake key {plan.short_key})")
            return Outcome(cached, _path(ctx, cached), cached=True)
    started = time.monotonic()
    timings: dict[str, float] = {}
    base_image, parent_doc, parents = _base(ctx, plan, opts, timings)
    work = ctx.state / "work" / f"{plan.name}-{plan.target}-{plan.short_key}"
    image_id = _packer_build(ctx, plan, base_image, work, timings)
    key_tag = f"{image_repository(plan.name)}:key-{plan.short_key}"
    reproducible_digest: str | None = None
    if opts.normalize:
        image_id, reproducible_digest = _normalize(ctx, plan, image_id, work, timings)

    def failed(report: VerifyReport, error: str) -> Path:
        _fail(ctx, plan, key_tag)
        rec = _record(ctx, plan, "failed", image_id, parent_doc, timings, started, report, error)
        return save(ctx.state, rec)

    report: VerifyReport | None = None
    if opts.verify:
        ctx.reporter.phase("verify", f"{len(plan.resolved.verify)} checks in a fresh container")
        conf = plan.resolved.recipe.targets.docker
        try:
            report = verify_container_image(
                ctx.runner,
                ctx.engine,
                image_id,
                plan.name,
                plan.resolved.verify,
                work / "verify",
                own_entrypoint=bool(conf and conf.entrypoint),
            )
        except VerifyError as exc:
            failed(VerifyReport(False, (), "", "", "fresh-container", 0.0), exc.message)
            raise
        timings["verify"] = report.seconds
        if not report.ok:
            raise verify_failure(
                plan, report, "the image was not recorded as good", failed(report, "verify failed")
            )
    version_tag = f"{image_repository(plan.name)}:{plan.version}"
    docker.tag(ctx.runner, ctx.engine, image_id, version_tag)
    rec = _record(
        ctx, plan, "good", image_id, parent_doc, timings, started, report, None, reproducible_digest
    )
    path = save(ctx.state, rec)
    ctx.reporter.note(f"{plan.name} {plan.version}: good ({image_id[:19]}, {version_tag})")
    return Outcome(rec, path, cached=False, parents=tuple(parents))


def _normalize(
    ctx: BuildContext, plan: Plan, raw_image: str, work: Path, timings: dict[str, float]
) -> tuple[str, str]:
    """Replace Packer's commit with a deterministic image: same inputs, same digest."""
    ctx.reporter.phase("normalize", "sorted entries, clamped times, volatile files dropped")
    t0 = time.monotonic()
    out = reproducible.normalize(
        ctx.runner,
        ctx.engine,
        raw_image,
        epoch=reproducible.epoch_from_key(plan.key),
        # the recipe's `volatile:` paths may change at run time (drift ignores them); they
        # are part of the image all the same, so they are not dropped here
        repository=image_repository(plan.name),
        tag=f"key-{plan.short_key}",
        work=work / "reproducible",
    )
    if out.image_id != raw_image:
        ctx.runner(ctx.engine.call("rmi", "--no-prune", raw_image, check=False))
    timings["normalize"] = time.monotonic() - t0
    return out.image_id, out.manifest_digest


def _base(
    ctx: BuildContext, plan: Plan, opts: BuildOptions, timings: dict[str, float]
) -> tuple[str, dict[str, str], list[BuildRecord]]:
    """The image to build on: a parent bake, a bootstrapped rootfs, or a pinned image."""
    if plan.parent is not None:
        parent_out = bake(ctx, plan.parent, BuildOptions(verify=opts.verify, cold=opts.cold))
        base_image = str(parent_out.record.artifact["image_id"])
        doc = {
            "name": plan.parent.name,
            "version": plan.parent.version,
            "bake_key": plan.parent.key,
            "image_id": base_image,
        }
        return base_image, doc, [*parent_out.parents, parent_out.record]
    base = plan.resolved.recipe.base
    assert base is not None
    if base.bootstrap is None:
        assert base.image is not None
        return base.image, {"name": base.image, "image_id": base.image}, []
    ctx.reporter.phase(f"{plan.name}: bootstrap", f"debian {base.bootstrap.suite} with mmdebstrap")
    t0 = time.monotonic()
    base_image, ref, built = bootstrap.ensure_docker_rootfs(
        ctx.runner,
        ctx.engine,
        plan.name,
        base.bootstrap,
        ctx.state / "bootstrap",
        rebuild=opts.cold,
        pins=upstream_pins(plan),
    )
    timings["bootstrap"] = time.monotonic() - t0
    ctx.reporter.note(f"base {ref} {'built' if built else 'reused'} ({base_image[:19]})")
    return base_image, {"name": ref, "image_id": base_image}, []


def _packer_build(
    ctx: BuildContext, plan: Plan, base_image: str, work: Path, timings: dict[str, float]
) -> str:
    """Render the template into `work` and run `packer build`; return the image ID."""
    template = write_tree(compile_plan(plan), work / "template")
    env, sensitive = secret_env(plan, ctx.environ)
    tmp = Path(ctx.environ.get("PACKER_TMP_DIR") or ctx.state / "packer-tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(ctx.engine.env)
    env["PACKER_TMP_DIR"] = str(tmp)
    n_steps = len(plan.resolved.steps)
    if hasattr(ctx.reporter, "set_label"):
        ctx.reporter.set_label(f"{plan.name}:", n_steps)
    ctx.reporter.phase("packer build", f"{n_steps} steps")
    events: list[packer.Event] = []

    def on_line(line: str) -> None:
        ev = packer.parse_line(line)
        if ev is not None:
            events.append(ev)
            ctx.reporter.packer_event(ev)

    if plan.packer.has_plugins:
        ctx.runner(Call(argv=packer.init_argv(plan.packer, template), env=env, cwd=work))
    t0 = time.monotonic()
    argv = packer.build_argv(plan.packer, template, {"base_image": base_image})
    try:
        ctx.runner(Call(argv=argv, env=env, cwd=work, sensitive=sensitive, timeout=6 * 3600), on_line)
    except Interrupted:
        ctx.reporter.note("interrupted: Packer removed its build container; nothing recorded")
        raise
    except ToolError as exc:
        raise packer_failure(plan, events, exc) from None
    timings["packer"] = time.monotonic() - t0
    image_id = next((a.id for a in packer.artifacts(events) if a.builder_id.endswith("docker-import")), "")
    if not image_id.startswith("sha256:"):
        raise ToolError(f"packer finished but reported no image for {plan.name}")
    return image_id


def verify_failure(plan: Plan, report: VerifyReport, kept: str, record: Path) -> VerifyError:
    """The error of a bake whose verify checks failed: which, and why (first lines)."""
    lines = [f"  ✗ {r.title}: {_first_line(r.message)}" for r in report.failed]
    return VerifyError(
        f"{plan.name} {plan.version}: {len(report.failed)} of {len(report.results)} "
        "verify checks failed:\n" + "\n".join(lines),
        f"{kept}; JUnit report: {report.junit}; record: {record}",
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return "failed"


def _fail(ctx: BuildContext, plan: Plan, key_tag: str) -> None:
    # the key tag must not make a later bake of the same key look reusable
    ctx.runner(ctx.engine.call("rmi", "--no-prune", key_tag, check=False))


def _path(ctx: BuildContext, rec: BuildRecord) -> Path:
    from bake.record import record_path

    return record_path(ctx.state, rec.name, rec.target, rec.bake_key)


def packer_failure(
    plan: Plan, events: list[packer.Event], exc: ToolError, console: Path | None = None
) -> ToolError:
    """Which step failed and what it printed, for any target. `console`: a VM's serial
    console log, shown when the build never got as far as an SSH connection."""
    from bake.progress import step_of

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
        titles = {i + 1: (s.name or s.module) for i, s in plan.resolved.steps}
        where = f" at step {step} of {len(plan.resolved.steps)} ({titles.get(step, '?')})"
    errors = [e for e in packer.errors(events) if e.strip()]
    lines = output[-15:] + [e.strip().splitlines()[-1] for e in errors[-1:]]
    tail = "\n".join("  | " + x for x in lines) or exc.message
    if console is not None and not connected and console.is_file():
        kept = [x for x in console.read_text(errors="replace").splitlines() if x.strip()][-20:]
        tail += "\n  the build VM's console:\n" + "\n".join("  | " + x for x in kept)
    render = "bake render" if plan.target == "docker" else f"bake render -t {plan.target}"
    return ToolError(
        f"packer build of {plan.name} {plan.version} ({plan.target}) failed{where}:\n{tail}",
        f"nothing was recorded; fix the step and bake again (`{render}` shows the script)",
    )


def _record(
    ctx: BuildContext,
    plan: Plan,
    status: str,
    image_id: str,
    parent: Mapping[str, str] | None,
    timings: Mapping[str, float],
    started: float,
    report: VerifyReport | None,
    error: str | None,
    reproducible_digest: str | None = None,
) -> BuildRecord:
    total = dict(timings)
    total["total"] = time.monotonic() - started
    return BuildRecord(
        status=status,
        name=plan.name,
        version=plan.version,
        target=plan.target,
        bake_key=plan.key,
        recipe_path=str(plan.resolved.path),
        packer_version=plan.packer.text,
        created=_now(ctx),
        inputs=dict(plan.inputs),
        artifact={
            "type": "docker-image",
            "image_id": image_id,
            "repository": image_repository(plan.name),
            "tags": [plan.version, f"key-{plan.short_key}"] if status == "good" else [],
            "volatile": list(plan.resolved.recipe.volatile),
            "reproducible_digest": reproducible_digest,
        },
        parent=dict(parent) if parent else None,
        timings=total,
        verify=verify_doc(plan, report.to_json() if report else {"ok": None, "skipped": True}),
        error=error,
    )


def verify_doc(plan: Plan, report: Mapping[str, Any]) -> dict[str, Any]:
    """A record's `verify`: the report, and the checks themselves. They travel with the
    image (test-result attestation), so `bake drift` can re-run them on a live instance."""
    return {**report, "checks": [c.model_dump(mode="json", exclude_none=True) for c in plan.resolved.verify]}


@dataclass(frozen=True)
class ReproReport:
    same: bool
    first: str  # reproducible (OCI manifest) digests of the two bakes
    second: str
    differences: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "reproducible": self.same,
            "first": self.first,
            "second": self.second,
            "differences": list(self.differences),
        }


def check_reproducible(ctx: BuildContext, plan: Plan) -> tuple[Outcome, ReproReport]:
    """Bake twice from cold (fresh state, base bootstrapped again, parents rebuilt) and
    compare the digests; name the files that differ when they do."""
    first = bake(ctx, plan, BuildOptions(cold=True))
    second_state = ctx.state / "reproducibility-check" / plan.short_key
    ctx2 = BuildContext(ctx.runner, ctx.engine, second_state, ctx.reporter, ctx.environ, ctx.clock)
    ctx.reporter.note(f"{plan.name}: second cold bake in {second_state}")
    second = bake(ctx2, plan, BuildOptions(cold=True))
    a = str(first.record.artifact.get("reproducible_digest"))
    b = str(second.record.artifact.get("reproducible_digest"))
    diffs: list[str] = []
    if a != b:
        layout = Path("work") / f"{plan.name}-{plan.target}-{plan.short_key}" / "reproducible" / "oci"
        diffs = reproducible.diff_layers(ctx.state / layout, second_state / layout)
    # the first bake is the one kept: its tags point at the image both bakes agree on
    docker.tag(ctx.runner, ctx.engine, str(first.record.artifact["image_id"]),
               f"{image_repository(plan.name)}:{plan.version}")  # fmt: skip
    return first, ReproReport(a == b, a, b, tuple(diffs))
