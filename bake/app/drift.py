"""`bake drift`: is a running instance still the image it was baked from?

The live instance is compared with the signed file manifest of its published image, then
the image's own verify checks (carried in its signed test-result) run against it. Those
run on this machine, in a child with a minimal environment (bake.verify.run); raw
`testinfra:` checks are Python from the attestation, so they run only when the operator
asks (``--allow-python-checks``) and are reported skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bake.app.session import RegistryAccess, Session
from bake.deploy.drift import DriftReport
from bake.deploy.resolve import Resolution
from bake.errors import BakeError, TrustError
from bake.infra import process
from bake.registry.client import Snapshot
from bake.targets.docker.engine import Engine
from bake.verify.run import VerifyReport

if TYPE_CHECKING:
    from bake.recipe.models import Check

PYTHON_CHECKS_SKIPPED = "a raw Python check from the attestation: runs only with --allow-python-checks"


@dataclass(frozen=True)
class DriftRequest:
    image: str  # NAME@VERSION, NAME@CHANNEL or REF@sha256:…
    host: str  # docker://CONTAINER or ssh://USER@HOST[:PORT]
    target: str = "docker"
    checks: bool = True
    ssh_config: Path | None = None
    python_checks: bool = False  # run raw `testinfra:` checks too (Python from the attestation)
    full: bool = False  # docker://: every path, not only the container's writable layer


@dataclass(frozen=True)
class DriftResult:
    resolution: Resolution
    host: str
    files: DriftReport
    checks: VerifyReport | None

    @property
    def clean(self) -> bool:
        return self.files.clean and (self.checks is None or self.checks.ok)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.clean,
            "image": f"{self.resolution.name}@{self.resolution.version}",
            "digest": self.resolution.digest,
            "files": self.files.to_json(),
            "checks": self.checks.to_json() if self.checks else None,
        }


@contextlib.contextmanager
def _engine_for(session: Session, host: str) -> Iterator[Engine | None]:
    """A Docker engine for docker:// instances; an ssh:// host needs none."""
    from bake.deploy.instances import parse_instance
    from bake.targets.docker.engine import engine

    if parse_instance(host).scheme != "docker":
        yield None
        return
    with engine(session.runner, session.state, session.environ) as eng:
        yield eng


def drift(session: Session, access: RegistryAccess, req: DriftRequest) -> DriftResult:
    from bake.attest.filemanifest import open_manifest
    from bake.deploy.drift import check_drift
    from bake.deploy.instances import testinfra_host
    from bake.deploy.resolve import find_by_digest, resolve
    from bake.verify.run import run_checks, skipped_results

    read = session.reader(access)
    snap = read.snapshot
    if "@sha256:" in req.image:
        res = find_by_digest(snap, req.image, req.target)
    else:
        res = resolve(snap, req.image, req.target)
    if "files" not in res.attestations:
        raise BakeError(f"{res.name}@{res.version} was published without a file manifest", "publish it again")
    envelope = json.loads(_attestation(snap, res, "files"))
    manifest = open_manifest(envelope, snap.attestation_keys, image_digest=res.digest)
    with process.terminate_as_interrupt(), _engine_for(session, req.host) as eng:
        report = check_drift(
            session.runner,
            eng,
            manifest.entries,
            req.host,
            manifest.volatile,
            image_digest=res.digest,
            ssh_config=req.ssh_config,
            environ=session.environ,
            image_id=res.image_id,
            full=req.full,
        )
        verify = None
        if req.checks and "test-result" in res.attestations:
            checks = image_checks(snap, res)
            held = [(c, PYTHON_CHECKS_SKIPPED) for c in checks if c.testinfra and not req.python_checks]
            run = [c for c in checks if not c.testinfra or req.python_checks]
            if checks:
                verify = run_checks(
                    session.runner,
                    eng.env if eng is not None else _ssh_agent(session.environ),
                    testinfra_host(req.host),
                    res.name,
                    run,
                    session.state / "drift" / res.name,
                    (f"--ssh-config={req.ssh_config.resolve()}",) if req.ssh_config else (),
                ).with_skipped(skipped_results(held))
    return DriftResult(res, req.host, report, verify)


def _ssh_agent(environ: Mapping[str, str]) -> dict[str, str]:
    """An ssh:// instance is reached with the operator's ssh agent, if there is one."""
    return {k: environ[k] for k in ("SSH_AUTH_SOCK",) if k in environ}


def image_checks(snap: Snapshot, res: Resolution) -> list[Check]:
    """The verify checks that verified the image, as its signed test result carries them."""
    from bake.attest.predicates import checks_from_test_result
    from bake.attest.statements import open_statement
    from bake.recipe.models import Check

    stmt = open_statement(
        json.loads(_attestation(snap, res, "test-result")),
        snap.attestation_keys,
        expect_subject_digest=res.digest,
    )
    return [Check.model_validate(c) for c in checks_from_test_result(stmt)]


def _attestation(snap: Snapshot, res: Resolution, kind: str) -> bytes:
    digest = res.attestations.get(kind)
    if digest is None:
        raise TrustError(f"{res.name}@{res.version} has no {kind} attestation in the signed metadata")
    return snap.attestation(res.name, res.version, kind, digest)
