"""What a container image holds, for its attestations: its dpkg database, OS release and
machine-readable copyright files, and its file manifest.

Read from the image itself: a container is created (never started), exported in one
stream, and removed; for the dpkg database one container runs `cat` without a network,
for the OS release and copyright files one runs :data:`bake.attest.sbom.EVIDENCE_SCRIPT`.
"""

from __future__ import annotations

from collections.abc import Sequence

from bake.attest.filemanifest import Entry, Streamer, tar_entries, volatile_set
from bake.attest.sbom import EVIDENCE_SCRIPT, OsEvidence, parse_evidence
from bake.infra import process
from bake.infra.process import Runner
from bake.targets.docker import engine as docker
from bake.targets.docker.engine import Engine

DRIFT_LABEL = "io.bake.drift"
DPKG_STATUS = "/var/lib/dpkg/status"
TIMEOUT = 3600.0


def dpkg_status(runner: Runner, engine: Engine, image: str) -> str:
    call = engine.call("run", "--rm", "--network", "none", "--entrypoint", "cat", image, DPKG_STATUS)
    return runner(call).stdout


def os_evidence(runner: Runner, engine: Engine, image: str) -> OsEvidence:
    """The image's /etc/os-release and machine-readable copyright files (none where the
    image has no shell to read them with: the SBOM then omits licences and distro)."""
    call = engine.call(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", EVIDENCE_SCRIPT, check=False
    )
    result = runner(call)
    return parse_evidence(result.stdout if result.returncode == 0 else "")


def collect_image_manifest(
    runner: Runner,
    engine: Engine,
    image: str,
    volatile: Sequence[str] = (),
    *,
    streamer: Streamer = process.stream,
) -> list[Entry]:
    """The manifest of *image*: a container is created (never started), exported, removed.

    *volatile* adds to DEFAULT_VOLATILE. Entries come sorted by path.
    """
    vol = volatile_set(volatile)
    # The entrypoint only satisfies `docker create` for images without one; nothing runs.
    labels = ("--label", f"{DRIFT_LABEL}=manifest", *engine.label_args())
    create = engine.call("create", "--network", "none", *labels, "--entrypoint", "/bin/true", "--", image)
    cid = runner(create).stdout.strip()
    try:
        with streamer(engine.call("export", "--", cid, timeout=TIMEOUT)) as out:
            return sorted(tar_entries(out, vol), key=lambda e: e.path)
    finally:
        docker.remove_container(runner, engine, cid)
