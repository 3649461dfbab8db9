"""Deployer commands: resolve, fetch, pin, lock check, drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bake.app import deploy
from bake.ui.options import JsonOpt, RegistryOpt, TargetOpt, TrustOpt, access, handled, session
from bake.ui.output import line, print_json


@handled
def resolve(
    spec: Annotated[str, typer.Argument(help="NAME@CHANNEL, NAME@VERSION or NAME@latest.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: TargetOpt = "docker",
    fmt: Annotated[
        str, typer.Option("--format", help="text, json, env, tfvars or k8s (a kustomize images: entry).")
    ] = "text",
    lock: Annotated[
        Path | None, typer.Option("--lock", help="Refuse metadata older than this lock file's pins.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the image reference by digest, after the TUF client's checks (signatures,
    freshness, rollback), revocation, the test gate and the artifact's bytes."""
    res = deploy.resolve(session(), access(registry, trust), spec, target, lock)
    line(deploy.render(res, "json" if as_json else fmt).rstrip("\n"))


@handled
def fetch(
    spec: Annotated[str, typer.Argument(help="NAME@CHANNEL, NAME@VERSION or NAME@latest.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the disk, e.g. web.qcow2.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: TargetOpt = "qemu",
    as_json: JsonOpt = False,
) -> None:
    """Download a VM image (disk, kernel, initrd) after the checks `bake resolve` makes; each
    file's bytes are checked against its signed digest before it is put in place."""
    got = deploy.fetch(session(), access(registry, trust), spec, target, out)
    if as_json:
        print_json(got.to_json())
        return
    res = got.resolution
    line(f"fetched {res.name}@{res.version} ({res.digest[:19]})")
    for role, f in got.files.items():
        line(f"  {role:<7} {f.path}  {f.size} bytes, sha256 checked")
    if got.usage:
        line(f"  boot    {got.usage}")


@handled
def pin(
    spec: Annotated[str, typer.Argument(help="NAME@CHANNEL or NAME@VERSION to pin.")],
    lock: Annotated[Path, typer.Option("--lock", help="Lock file.")] = Path("bake.lock"),
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: TargetOpt = "docker",
    as_json: JsonOpt = False,
) -> None:
    """Resolve and record the digest in a lock file."""
    done = deploy.pin(session(), access(registry, trust), spec, target, lock)
    res = done.resolution
    if as_json:
        print_json(done.to_json())
    else:
        line(f"pinned {res.name}@{res.version} ({target}) {res.ref or res.digest} in {lock}")


@handled
def lock_check(
    lock: Annotated[Path, typer.Argument(help="Lock file.")] = Path("bake.lock"),
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report revoked and outdated pins (exit 1 when a pin is revoked or gone)."""
    report = deploy.lock_check(session(), access(registry, trust), lock)
    if as_json:
        print_json(report.to_json())
    else:
        for f in report.findings:
            line(f"{f.severity:<7} {f.kind:<12} {f.message}")
        if not report.findings:
            line(f"{lock}: every pin is current")
    if report.errors:
        raise typer.Exit(1)


@handled
def drift(
    image: Annotated[str, typer.Argument(help="NAME@VERSION, NAME@CHANNEL or REF@sha256:… as published.")],
    host: Annotated[str, typer.Option("--host", help="docker://CONTAINER or ssh://USER@HOST[:PORT].")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target the instance runs.")] = "docker",
    no_checks: Annotated[bool, typer.Option("--no-checks", help="Compare files only.")] = False,
    ssh_config: Annotated[
        Path | None, typer.Option("--ssh-config", help="ssh_config file for ssh:// hosts (ssh -F).")
    ] = None,
    allow_python_checks: Annotated[
        bool,
        typer.Option(
            "--allow-python-checks",
            help="Also run the image's raw `testinfra:` checks: Python from its attestation, run on "
            "this machine (in a child without your credentials).",
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="docker://: read every path (docker export), not only the container's writable "
            "layer; also catches an engine whose image store was changed under it.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare a live instance with the signed file manifest of its image, then re-run the
    image's verify checks against it (raw Python checks only with --allow-python-checks).
    Exit 0 when clean, 1 when drifted."""
    from bake.app.drift import DriftRequest
    from bake.app.drift import drift as check_drift
    from bake.deploy.drift import render_text

    req = DriftRequest(image, host, target, not no_checks, ssh_config, allow_python_checks, full)
    result = check_drift(session(), access(registry, trust), req)
    if as_json:
        print_json(result.to_json())
    else:
        res = result.resolution
        line(f"{res.name}@{res.version} ({res.digest[:19]}) on {host}")
        line(render_text(result.files))
        if result.checks is not None:
            failed, skipped = result.checks.failed, result.checks.skipped
            counts = f"{len(result.checks.passed)} passed, {len(failed)} failed"
            if skipped:
                counts += f", {len(skipped)} skipped (raw Python checks need --allow-python-checks)"
            line(f"verify checks: {counts}")
            for r in failed:
                first = r.message.splitlines()[0] if r.message else r.outcome
                line(f"  ✗ {r.title}: {first}")
        line("clean" if result.clean else "DRIFTED")
    if not result.clean:
        raise typer.Exit(1)
