"""Working on recipes: validate, plan, render, schema, init. Nothing here starts a bake."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bake.app.session import Session
from bake.plan import Plan, changed_inputs, plan_document, plan_recipe
from bake.record import latest_good


@dataclass(frozen=True)
class Validated:
    recipe: Path
    name: str
    version: str
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "recipe": str(self.recipe),
            "name": self.name,
            "version": self.version,
            "targets": list(self.targets),
        }


def validate(
    session: Session,
    recipes: Sequence[Path],
    var_files: Sequence[Path] = (),
    extra_vars: Mapping[str, str] | None = None,
) -> list[Validated]:
    """Syntax, fields, vars and referenced files of each recipe, for every target it
    declares; RecipeError (exit 2) on the first bad one."""
    from bake.recipe.load import resolve_targets

    out = []
    for path in recipes:
        resolved = resolve_targets(
            path, var_files=var_files, extra_vars=extra_vars or {}, search_path=session.search_path()
        )
        first = next(iter(resolved.values()))
        out.append(Validated(path, first.name, first.recipe.version, tuple(resolved)))
    return out


@dataclass(frozen=True)
class PlanRequest:
    recipe: Path
    targets: tuple[str, ...] = ()  # default: every target the recipe declares
    var_files: tuple[Path, ...] = ()
    extra_vars: Mapping[str, str] = field(default_factory=dict)
    packer_version: str | None = None  # render for this Packer instead of the one on PATH
    offline: bool = False  # leave upstream package state out of the bake key


def plans(session: Session, req: PlanRequest, *, upstream: bool = False) -> list[Plan]:
    from bake.app.build import upstream as upstream_of

    return plan_recipe(
        req.recipe,
        session.packer_info(req.packer_version),
        targets=req.targets,
        var_files=req.var_files,
        extra_vars=req.extra_vars,
        search_path=session.search_path(),
        upstream=upstream_of(req.offline) if upstream else None,
    )


def plan(session: Session, req: PlanRequest) -> list[dict[str, object]]:
    """`bake plan`: resolved vars, steps per target, the parent chain, the bake key, and
    which inputs changed since the last good bake here."""
    docs = []
    for p in plans(session, req, upstream=True):
        doc: dict[str, object] = dict(plan_document(p))
        last = latest_good(session.state, p.name, p.target)
        doc["last_good"] = (
            {"bake_key": last.bake_key, "created": last.created, "changed": changed_inputs(p, last.inputs)}
            if last
            else None
        )
        docs.append(doc)
    return docs


@dataclass(frozen=True)
class RenderedTemplate:
    template: Path
    files: tuple[str, ...]
    bake_key: str

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "template": str(self.template),
            "files": list(self.files),
            "bake_key": self.bake_key,
        }


def render(session: Session, req: PlanRequest, out: Path) -> RenderedTemplate:
    """The Packer template and step scripts of one target, written to ``out``."""
    from bake.compile.template import compile_plan, write_tree

    (p,) = plans(session, req)
    rendered = compile_plan(p)
    template = write_tree(rendered, out)
    return RenderedTemplate(template, tuple(sorted(rendered.files)), p.key)


def schema() -> dict[str, object]:
    from bake.recipe.schema import recipe_schema

    return recipe_schema()


def init(name: str, directory: Path, extends: str | None) -> Path:
    """A recipe that validates, to start from."""
    from bake.recipe.scaffold import scaffold

    return scaffold(name, directory, extends)
