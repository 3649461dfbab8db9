"""`bake build` (one recipe, or a whole folder as a graph) and `bake outdated`."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bake.cli import ExtraOpt, JsonOpt, VarFileOpt, _packer_info, _runtime, _search_path, app, handled
from bake.errors import BakeError
from bake.output import line, print_json

RegistryOpt = Annotated[
    str | None, typer.Option("--registry", "-r", help="Publish verified bakes here (dir:… or oci://…).")
]


BAKED_TARGETS = ("docker", "qemu")


def _check_target(target: str) -> None:
    if target not in BAKED_TARGETS:
        raise BakeError(
            f"`bake build -t {target}` needs a cloud account and network access to the cloud; "
            "bake renders and validates cloud templates but does not run them",
            f"`bake render RECIPE -t {target} -o DIR`, then `packer build DIR` where the credentials "
            f"are; bake builds: {', '.join(BAKED_TARGETS)}",
        )


def _upstream(offline: bool) -> Any:
    from bake import upstream

    return upstream.offline if offline else upstream.Upstream()


def _published(p: Any, registry: str, trust: list[str] | None, key: str | None) -> str | None:
    """The registry's version with this plan's bake key, if any (skips the whole bake)."""
    from datetime import UTC, datetime

    from bake.cli_registry import writer
    from bake.publish import find_by_key
    from bake.registry import client

    reg, _signer, trusted = writer(registry, trust, key)
    if reg.read_index_envelope() is None:
        return None
    snap = client.read(reg, trusted, state=client.FreshnessState.default(), now=datetime.now(UTC))
    hit = find_by_key(snap.get(p.name), p.key)
    return hit[0] if hit else None


def _in_registry(p: Any, registry: str, trust: list[str] | None, key: str | None, as_json: bool) -> bool:
    hit = _published(p, registry, trust, key)
    if hit is None:
        return False
    doc = {"ok": True, "cached": "registry", "name": p.name, "version": hit, "bake_key": p.key}
    if as_json:
        print_json(doc)
    else:
        line(f"cached  {p.name}@{hit} is in {registry} with bake key {p.short_key}: nothing to bake")
    return True


@app.command()
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
    trust: Annotated[list[str] | None, typer.Option("--trust", help="Trusted public key(s).")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Signing key for publishing.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Bake even if a good bake of this key exists.")
    ] = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip verification (never publishable).")
    ] = False,
    check_reproducible: Annotated[
        bool, typer.Option("--check-reproducible", help="Bake twice from cold and compare the digests.")
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Leave upstream package state out of the bake key.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Packer's output.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bake: plan, render, packer build, verify in a fresh instance, record. With --registry,
    publish (or skip everything when the registry has this bake key). With --all DIR, bake
    a folder's recipes as a graph: unchanged ones start no packer at all."""
    _check_target(target)
    _state, settings = _runtime()
    registry = registry or settings.registry
    if all_in is not None:
        _build_all(all_in, jobs, target, registry, trust, key, force, no_verify, offline, verbose, as_json)
        return
    if recipe is None:
        raise BakeError("give a recipe, or --all DIR", "bake build recipes/web.yaml")
    _build_one(
        recipe, target, var_file, extra_var, registry, trust, key, force, no_verify, check_reproducible,
        offline, verbose, as_json,
    )  # fmt: skip


def _build_one(
    recipe: Path,
    target: str,
    var_file: list[Path] | None,
    extra_var: list[str] | None,
    registry: str | None,
    trust: list[str] | None,
    key: str | None,
    force: bool,
    no_verify: bool,
    check_reproducible: bool,
    offline: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    from bake import docker, process
    from bake.build import BuildContext, BuildOptions, bake
    from bake.build import check_reproducible as check_repro
    from bake.output import is_ci
    from bake.plan import plan_recipe
    from bake.progress import make_reporter
    from bake.recipe.load import parse_extra_vars

    state, _settings = _runtime()
    (p,) = plan_recipe(
        recipe,
        _packer_info(None),
        targets=[target],
        var_files=var_file or [],
        extra_vars=parse_extra_vars(extra_var or []),
        search_path=_search_path(),
        upstream=_upstream(offline),
    )
    if registry and not force and not check_reproducible and _in_registry(p, registry, trust, key, as_json):
        return
    if target == "qemu" and check_reproducible:
        raise BakeError("--check-reproducible compares container images", "drop it for -t qemu")
    reporter = make_reporter(verbose=verbose, plain=as_json or is_ci())
    repro = None
    if target == "qemu":
        publish_to = (registry, trust, key) if registry else None
        _build_vm(p, state, reporter, BuildOptions(force=force, verify=not no_verify), publish_to, as_json)
        return
    try:
        with process.terminate_as_interrupt(), docker.engine(process.run, state) as eng:
            ctx = BuildContext(
                runner=process.run, engine=eng, state=state, reporter=reporter, environ=os.environ
            )
            if check_reproducible:
                outcome, repro = check_repro(ctx, p)
            else:
                outcome = bake(ctx, p, BuildOptions(force=force, verify=not no_verify))
    finally:
        reporter.close()
    rec = outcome.record
    published = None
    if registry and (repro is None or repro.same):
        from bake.cli_registry import publish_records

        (published,) = publish_records([rec], registry, trust, key)
    doc = {"ok": True, "cached": outcome.cached, "record_path": str(outcome.record_path), **rec.to_json()}
    if published is not None:
        doc["published"] = published.to_json()
    if repro is not None:
        doc["reproducibility"] = repro.to_json()
        doc["ok"] = repro.same
    if as_json:
        print_json(doc)
    else:
        _render_one(outcome, published, repro)
    if repro is not None and not repro.same:
        raise typer.Exit(1)


def _build_vm(
    p: Any,
    state: Path,
    reporter: Any,
    opts: Any,
    publish_to: tuple[str, list[str] | None, str | None] | None,
    as_json: bool,
) -> None:
    """The qemu target: a bootable qcow2, verified by booting a fresh VM from it."""
    from bake import process
    from bake.vmbuild import VmContext, bake_vm

    try:
        with process.terminate_as_interrupt():
            ctx = VmContext(runner=process.run, state=state, reporter=reporter, environ=os.environ)
            outcome = bake_vm(ctx, p, opts)
    finally:
        reporter.close()
    published = None
    if publish_to is not None:
        from bake.cli_registry import publish_records

        (published,) = publish_records([outcome.record], *publish_to)
    doc = {
        "ok": True,
        "cached": outcome.cached,
        "record_path": str(outcome.record_path),
        **outcome.record.to_json(),
        "published": published.to_json() if published else None,
    }
    if as_json:
        print_json(doc)
        return
    _render_one(outcome, published, None)


def _render_one(outcome: Any, published: Any, repro: Any) -> None:
    rec = outcome.record
    v = rec.verify
    vm = rec.artifact.get("type") == "qcow2"
    what = rec.artifact.get("path") if vm else rec.artifact.get("image_id")
    line(f"{'cached' if outcome.cached else 'baked'}  {rec.name} {rec.version}  {what}")
    if vm:
        line(f"  digest    {rec.artifact.get('digest')}")
    else:
        line(f"  tags      {rec.artifact.get('repository')}:{rec.version}")
    if rec.artifact.get("reproducible_digest"):
        line(f"  digest    {rec.artifact['reproducible_digest']} (reproducible)")
    if v.get("skipped"):
        line("  verify    skipped (--no-verify)")
    else:
        line(f"  verify    {v.get('passed')} passed, {v.get('failed')} failed ({v.get('method')})")
    line(f"  record    {outcome.record_path}")
    if published is not None:
        line(f"  published {published.name}@{published.version}  {published.ref or published.digest}")
    if repro is not None:
        verdict = "reproducible" if repro.same else "NOT reproducible"
        line(f"  check     {verdict}: {repro.first} vs {repro.second}")
        for d in repro.differences[:50]:
            line(f"    {d}")


def _build_all(
    folder: Path,
    jobs: int,
    target: str,
    registry: str | None,
    trust: list[str] | None,
    key: str | None,
    force: bool,
    no_verify: bool,
    offline: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    from bake import docker, graph, process
    from bake.build import BuildContext, BuildOptions, bake
    from bake.plan import plan_recipe
    from bake.progress import PlainReporter

    state, _settings = _runtime()
    nodes = graph.discover(folder)
    info = _packer_info(None)
    up = _upstream(offline)
    started = time.monotonic()

    def report(r: graph.NodeResult) -> None:
        if not as_json:
            line(f"{r.status:<8} {r.name:<20} {r.seconds:7.1f}s  {r.detail}")

    vms = target == "qemu"  # VM bakes need no Docker engine
    engine = contextlib.nullcontext() if vms else docker.engine(process.run, state)
    with process.terminate_as_interrupt(), engine as eng:

        def work(node: graph.Node) -> graph.NodeResult:
            t0 = time.monotonic()
            (p,) = plan_recipe(
                node.path, info, targets=[target], search_path=[folder, *_search_path()], upstream=up
            )
            if registry and not force:
                hit = _published(p, registry, trust, key)
                if hit is not None:
                    return graph.NodeResult(
                        node.name, "cached", time.monotonic() - t0, p.version, f"registry {hit}"
                    )
            reporter = PlainReporter(verbose=verbose)
            opts = BuildOptions(force=force, verify=not no_verify)
            if vms:
                from bake.vmbuild import VmContext, bake_vm

                vctx = VmContext(runner=process.run, state=state, reporter=reporter, environ=os.environ)
                outcome = bake_vm(vctx, p, opts)
            else:
                assert eng is not None
                ctx = BuildContext(
                    runner=process.run, engine=eng, state=state, reporter=reporter, environ=os.environ
                )
                outcome = bake(ctx, p, opts)
            art = outcome.record.artifact
            detail = str(art.get("digest") if vms else art.get("image_id", ""))[:19]
            if registry:
                from bake.cli_registry import publish_records

                (pub,) = publish_records([outcome.record], registry, trust, key, engine=eng)
                detail = f"published {pub.name}@{pub.version}"
            status = "cached" if outcome.cached else "built"
            return graph.NodeResult(node.name, status, time.monotonic() - t0, p.version, detail)

        results = graph.run(nodes, work, jobs=jobs, on_done=report)
    counts = graph.summary(results)
    total = time.monotonic() - started
    if as_json:
        print_json(
            {
                "ok": counts["failed"] == 0,
                "seconds": round(total, 3),
                "jobs": jobs,
                "summary": counts,
                "results": [r.to_json() for r in results],
            }
        )
    else:
        line("")
        line(f"{'recipe':<20} {'status':<8} {'seconds':>8}  detail")
        for r in results:
            line(f"{r.name:<20} {r.status:<8} {r.seconds:8.1f}  {r.detail}")
        line(
            f"built {counts['built']}, cached {counts['cached']}, failed {counts['failed']}, "
            f"skipped {counts['skipped']} in {total:.1f}s (-j {jobs})"
        )
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
@handled
def outdated(
    registry: Annotated[str | None, typer.Option("--registry", "-r", help="Registry URL.")] = None,
    trust: Annotated[list[str] | None, typer.Option("--trust", help="Trusted public key(s).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Channel heads built on a parent that has a newer version since (exit 1 if any)."""
    from bake.cli_registry import reader
    from bake.outdated import find_outdated

    _reg, snap, _trusted = reader(registry, trust)
    found = find_outdated(snap)
    if as_json:
        print_json({"ok": not found, "outdated": [f.to_json() for f in found]})
    else:
        for f in found:
            line(f"{f.name}@{f.channel} ({f.version}) is built on {f.parent}; newer: {f.newer}")
        if not found:
            line("every channel head is built on its parent's newest version")
    if found:
        raise typer.Exit(1)
