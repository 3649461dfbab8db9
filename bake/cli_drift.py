"""`bake drift`: is a running instance still the image it was baked from?"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bake.cli import JsonOpt, app, handled
from bake.cli_registry import RegistryOpt, TrustOpt, reader
from bake.errors import BakeError, TrustError
from bake.output import line, print_json


def find_by_digest(snap: Any, spec: str, target: str) -> Any:
    """`REF@sha256:…` (or `NAME@sha256:…`): the published build with that digest."""
    from bake.deploy import resolve

    ref, _, digest = spec.rpartition("@")
    wanted = ref.rsplit("/", 1)[-1].split(":", 1)[0]
    for name in snap.names():
        if wanted and name != wanted and not ref.endswith(name):
            continue
        doc = snap.image(name)
        for version, build in doc.versions.items():
            out = build.targets.get(target)
            if out is not None and out.digest == digest:
                return resolve(snap, f"{name}@{version}", target)
    raise TrustError(
        f"no published image has the digest {digest}", "check the reference, or pass NAME@VERSION"
    )


def testinfra_host(url: str) -> str:
    """The testinfra backend URL for a drift host URL."""
    if url.startswith("docker://"):
        container = url.removeprefix("docker://")
        return f"docker://root@{container}" if "@" not in container else url
    return url


@app.command()
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
    as_json: JsonOpt = False,
) -> None:
    """Compare a live instance with the signed file manifest of its image, then re-run the
    image's verify checks against it. Exit 0 when clean, 1 when drifted."""
    from bake import docker, filemanifest, process
    from bake import drift as driftmod
    from bake.attest import open_statement
    from bake.deploy import resolve
    from bake.project import find_root, load_settings, state_dir
    from bake.publish import checks_from_test_result
    from bake.recipe.models import Check
    from bake.verify import run_checks

    _reg, snap, trusted = reader(registry, trust)
    res = find_by_digest(snap, image, target) if "@sha256:" in image else resolve(snap, image, target)
    if "files" not in res.attestations:
        raise BakeError(f"{res.name}@{res.version} was published without a file manifest", "publish it again")
    envelope = json.loads(snap.load_blob(res.attestations["files"]))
    manifest = filemanifest.open_manifest(envelope, trusted, image_digest=res.digest)
    root = find_root()
    state = state_dir(root, load_settings(root))
    containers = host.startswith("docker://")  # an ssh:// host needs no Docker engine
    engine_cm = docker.engine(process.run, state) if containers else contextlib.nullcontext(None)
    with process.terminate_as_interrupt(), engine_cm as eng:
        report = driftmod.check_drift(
            process.run,
            eng,
            manifest.entries,
            host,
            manifest.volatile,
            image_digest=res.digest,
            ssh_config=ssh_config,
        )
        verify = None
        if not no_checks and "test-result" in res.attestations:
            stmt = open_statement(
                json.loads(snap.load_blob(res.attestations["test-result"])),
                trusted,
                expect_subject_digest=res.digest,
            )
            checks = [Check.model_validate(c) for c in checks_from_test_result(stmt)]
            if checks:
                verify = run_checks(
                    process.run,
                    eng.env if eng is not None else {},
                    testinfra_host(host),
                    res.name,
                    checks,
                    Path(state) / "drift" / res.name,
                    (f"--ssh-config={ssh_config.resolve()}",) if ssh_config else (),
                )
    clean = report.clean and (verify is None or verify.ok)
    if as_json:
        print_json(
            {
                "ok": clean,
                "image": f"{res.name}@{res.version}",
                "digest": res.digest,
                "files": report.to_json(),
                "checks": verify.to_json() if verify else None,
            }
        )
    else:
        line(f"{res.name}@{res.version} ({res.digest[:19]}) on {host}")
        line(driftmod.render_text(report))
        if verify is not None:
            failed = verify.failed
            line(f"verify checks: {len(verify.results) - len(failed)} passed, {len(failed)} failed")
            for r in failed:
                first = r.message.splitlines()[0] if r.message else r.outcome
                line(f"  ✗ {r.title}: {first}")
        line("clean" if clean else "DRIFTED")
    if not clean:
        raise typer.Exit(1)
