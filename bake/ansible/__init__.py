"""Ansible plays in bakes: the runner Packer starts for an `ansible:` step, and the two
plug-ins it gives ansible-core (a connection into the build container, a summary of
failed tasks). ansible-core is imported only by the runner, while a play runs."""

from __future__ import annotations

import sys
from pathlib import Path


def runner_env() -> dict[str, str]:
    """What Packer passes on to the runner: this Python (which has ansible-core) and this
    bake (so the runner is the same code as the bake that rendered the template)."""
    return {"BAKE_PYTHON": sys.executable, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
