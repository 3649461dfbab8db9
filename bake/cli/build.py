"""`bake build`: one recipe, or a whole folder as a graph; `bake verify`: checks only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bake.app import build as builds
from bake.app.build import BuildAllRequest, BuildRequest, BuildResult
from bake.app.graph import NodeResult
from bake.app.verify import VerifyRequest, verify_image
from bake.errors import BakeError
from bake.ui.options import (
    ExtraOpt,
    JsonOpt,
    KeyOpt,
    OfflineOpt,
    RegistryOpt,
    TargetOpt,
    TrustOpt,
    VarFileOpt,
    access,
    extra_vars,
    handled,
    session,
)
from bake.ui.output import is_ci, line, print_json
from bake.ui.progress import PlainReporter, make_reporter
from bake.verify.run import VerifyReport


@handled
def build(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe file (or --all DIR).")] = None,
    all_in: Annotated[
        Path | None, typer.Option("--all", help="Bake every recipe of a folder, parents first.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Independent bakes at once (--all).")] = 1,
    target: Annotated[str, typer.Option("--target", "-t", help="Target to bake.")] = "docker",
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Bake even if a good bake of this key exists.")
    ] = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip verification (never publishable).")
    ] = False,
    check_reproducible: Annotated[
        bool, typer.Option("--check-reproducible", help="Bake twice from cold and compare the digests.")
    ] = False,
    offline: OfflineOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Packer's output.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bake: plan, render, packer build, verify in a fresh instance, record. With --registry,
    publish (or skip everything when the registry has this bake key). With --all DIR, bake
    a folder's recipes as a graph: unchanged ones start no packer at all."""
    s = session()
    url = registry or s.settings.registry
    where = access(url, trust, key) if url else None
    if all_in is not None:
        req_all = BuildAllRequest(all_in, target, jobs, where, force, not no_verify, offline, verbose)

        def report(r: NodeResult) -> None:
            if not as_json:
                line(f"{r.status:<8} {r.name:<20} {r.seconds:7.1f}s  {r.detail}")

        result = builds.build_all(s, req_all, report)
        if as_json:
            print_json(result.to_json())
        else:
            _show_all(result)
        if not result.ok:
            raise typer.Exit(1)
        return
    if recipe is None:
        raise BakeError("give a recipe, or --all DIR", "bake build recipes/web.yaml")
    req = BuildRequest(
        recipe,
        target,
        tuple(var_file or ()),
        extra_vars(extra_var),
        where,
        force,
        not no_verify,
        check_reproducible,
        offline,
    )
    reporter = make_reporter(verbose=verbose, plain=as_json or is_ci())
    try:
        one = builds.build_one(s, req, reporter)
    finally:
        reporter.close()
    if as_json:
        print_json(one.to_json())
    else:
        _show_one(one, url)
    if not one.ok:
        raise typer.Exit(1)


def _show_one(result: BuildResult, registry: str | None) -> None:
    plan = result.plan
    if result.outcome is None:
        line(
            f"cached  {plan.name}@{result.registry_version} is in {registry} with bake key "
            f"{plan.short_key}: nothing to bake"
        )
        return
    rec = result.outcome.record
    line(f"{'cached' if result.outcome.cached else 'baked'}  {rec.name} {rec.version}  {rec.artifact.id}")
    for label, value in result.describe:
        line(f"  {label:<9} {value}")
    v = rec.verify
    if v.get("skipped") is True:
        line("  verify    skipped (--no-verify)")
    else:
        skipped = f", {v.get('skipped')} skipped" if v.get("skipped") else ""
        line(f"  verify    {v.get('passed')} passed, {v.get('failed')} failed{skipped} ({v.get('method')})")
    line(f"  record    {result.outcome.record_path}")
    if result.published is not None:
        pub = result.published
        line(f"  published {pub.name}@{pub.version}  {pub.ref or pub.digest}")
    repro = result.reproducibility
    if repro is not None:
        verdict = "reproducible" if repro.same else "NOT reproducible"
        line(f"  check     {verdict}: {repro.first} vs {repro.second}")
        for d in repro.differences[:50]:
            line(f"    {d}")


def _show_all(result: builds.GraphResult) -> None:
    counts = result.counts
    line("")
    line(f"{'recipe':<20} {'status':<8} {'seconds':>8}  detail")
    for r in result.results:
        line(f"{r.name:<20} {r.status:<8} {r.seconds:8.1f}  {r.detail}")
    line(
        f"built {counts['built']}, cached {counts['cached']}, failed {counts['failed']}, "
        f"skipped {counts['skipped']} in {result.seconds:.1f}s (-j {result.jobs})"
    )


@handled
def verify(
    recipe: Annotated[Path, typer.Argument(help="Recipe whose verify: checks to run.")],
    image: Annotated[
        str,
        typer.Option(
            "--image", help="Image to check: ID, REF or REF@sha256:… (docker); a qcow2 path (qemu)."
        ),
    ],
    target: TargetOpt = "docker",
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a recipe's verify checks against a fresh instance of an image (a container, or a
    VM booted from a qcow2 with its kernel and initrd beside it)."""
    req = VerifyRequest(recipe, image, target, tuple(var_file or ()), extra_vars(extra_var))
    report = verify_image(session(), req, PlainReporter())
    if as_json:
        print_json(report.to_json())
    else:
        _show_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _show_report(report: VerifyReport) -> None:
    for res in report.results:
        mark = {"passed": "ok  ", "skipped": "skip"}.get(res.outcome, "FAIL")
        detail = (
            "" if res.outcome == "passed" else f"\n     {res.message.splitlines()[0] if res.message else ''}"
        )
        line(f"{mark} {res.title}{detail}")
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    line(f"{len(report.passed)} passed, {len(report.failed)} failed{skipped}")
