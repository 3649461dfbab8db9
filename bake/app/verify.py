"""`bake verify RECIPE --image REF`: a recipe's checks against a fresh instance of any image
of a bakeable target (a container image in the engine, a qcow2 disk with its kernel and
initrd beside it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bake import targets
from bake.app.session import Session
from bake.infra import packer, process
from bake.plan import plan_recipe
from bake.targets import loop, runs
from bake.ui.progress import Reporter
from bake.verify.run import VerifyReport


@dataclass(frozen=True)
class VerifyRequest:
    recipe: Path
    image: str
    target: str = "docker"
    var_files: tuple[Path, ...] = ()
    extra_vars: Mapping[str, str] = field(default_factory=dict)


def verify_image(session: Session, req: VerifyRequest, reporter: Reporter) -> VerifyReport:
    target = targets.get(req.target)
    # no Packer runs here: the plan's bake key plays no part, so no Packer is detected
    (plan,) = plan_recipe(
        req.recipe,
        packer.DEFAULT,
        targets=[req.target],
        var_files=req.var_files,
        extra_vars=req.extra_vars,
        search_path=session.search_path(),
    )
    run = runs.new_run(session.state, session.environ)
    ctx = replace(session.bake_context(reporter), run=run)
    with process.terminate_as_interrupt(), target.session(ctx) as tsession, runs.active(run, [tsession]):
        return loop.verify_only(tsession, plan, req.image)
