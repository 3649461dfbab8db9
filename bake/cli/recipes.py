"""`bake validate`, `plan`, `render`, `schema`, `init`: working on recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bake.app import fleet, recipes
from bake.app.recipes import PlanRequest
from bake.errors import BakeError
from bake.ui.options import (
    ExtraOpt,
    JsonOpt,
    OfflineOpt,
    PackerVersionOpt,
    RegistryOpt,
    TargetsOpt,
    VarFileOpt,
    access,
    extra_vars,
    handled,
    session,
)
from bake.ui.output import line, print_json


@handled
def validate(
    recipes_: Annotated[list[Path], typer.Argument(metavar="RECIPE", help="Recipe files.")],
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check recipes: syntax, fields, vars, referenced files. Exit 2 on the first bad one."""
    results = recipes.validate(session(), recipes_, var_file or [], extra_vars(extra_var))
    if as_json:
        print_json({"ok": True, "recipes": [r.to_json() for r in results]})
        return
    for r in results:
        line(f"ok  {r.recipe}  {r.name} {r.version}  targets: {', '.join(r.targets)}")


@handled
def plan(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe file.")] = None,
    target: TargetsOpt = None,
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    packer_version: PackerVersionOpt = None,
    offline: OfflineOpt = False,
    folder: Annotated[
        Path | None,
        typer.Option("--all", help="Plan every recipe of this folder: the bakes needed, in waves."),
    ] = None,
    registry: RegistryOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", help="With --all: text, json, github-matrix or gitlab.")
    ] = "text",
    wave: Annotated[int | None, typer.Option("--wave", help="With --all: only this wave's bakes.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show resolved vars, steps per target, the parent chain, the bake key and which
    inputs changed since the last good bake. With --all DIR (and --registry): the bakes the
    folder needs (bake keys the registry lacks), in waves ordered by `extends`, as text,
    JSON, a GitHub Actions matrix or a GitLab child pipeline."""
    if folder is not None:
        where = access(registry) if registry or session().settings.registry else None
        planned = fleet.plan_all(session(), folder, (target or ["docker"])[0], where, offline=offline)
        line(fleet.render(planned, "json" if as_json else fmt, wave))
        return
    if recipe is None:
        raise BakeError(
            "give a recipe, or --all DIR", "bake plan recipes/web.yaml, or bake plan --all recipes", 2
        )
    req = PlanRequest(
        recipe, tuple(target or ()), tuple(var_file or ()), extra_vars(extra_var), packer_version, offline
    )
    docs = recipes.plan(session(), req)
    if as_json:
        print_json({"ok": True, "plans": docs})
        return
    for d in docs:
        _show_plan(d)


def _show_plan(d: dict[str, object]) -> None:
    line(f"{d['name']} {d['version']}  target {d['target']}")
    line(f"  bake key  {d['bake_key']}")
    chain = d["chain"]
    assert isinstance(chain, list)
    line(f"  chain     {' → '.join(map(str, chain))}")
    line(f"  packer    {d['packer_version']}")
    variables = d["vars"]
    assert isinstance(variables, dict)
    line("  vars      " + (", ".join(f"{k}={v!r}" for k, v in variables.items()) or "(none)"))
    steps = d["steps"]
    assert isinstance(steps, list)
    for s in steps:
        line(f"  step {s['index']:>2}   {s['module']:<9} {s['name']}")
    line(f"  verify    {d['verify']} checks")
    last = d["last_good"]
    if not isinstance(last, dict):
        line("  last good (none baked here yet)")
    elif last["bake_key"] == d["bake_key"]:
        line(f"  last good {last['created']}: same bake key, nothing to bake")
    else:
        line(f"  last good {last['created']}: changed since: {', '.join(last['changed'])}")


@handled
def render(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the template and scripts.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target to render.")] = "docker",
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    packer_version: PackerVersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the Packer template and step scripts for one target."""
    req = PlanRequest(recipe, (target,), tuple(var_file or ()), extra_vars(extra_var), packer_version)
    result = recipes.render(session(), req, out)
    if as_json:
        print_json(result.to_json())
    else:
        line(f"wrote {result.template} (+{len(result.files) - 1} files)  bake key {result.bake_key}")


@handled
def schema(as_json: JsonOpt = False) -> None:
    """Print the JSON Schema of recipes (for editors)."""
    print_json(recipes.schema())


@handled
def init(
    name: Annotated[str, typer.Argument(help="Recipe name (lowercase).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write NAME.yaml.")] = Path(),
    extends: Annotated[str | None, typer.Option(help="Parent recipe (default: a Debian base).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Scaffold a recipe that validates."""
    path = recipes.init(name, directory, extends)
    if as_json:
        print_json({"ok": True, "recipe": str(path)})
    else:
        line(f"wrote {path}; next: bake validate {path}")


@handled
def import_ansible(
    playbook: Annotated[Path, typer.Argument(help="An Ansible playbook.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The recipe to write (files go beside it).")],
    extends: Annotated[str, typer.Option(help="The parent recipe.")] = "debian-base",
    name: Annotated[str | None, typer.Option(help="Recipe name (default: from the playbook's).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing recipe.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a playbook into a recipe: tasks that map one-to-one onto bake modules become
    steps, the rest stays Ansible in `ansible:` steps; says what it could not map and why."""
    from bake.app.importer import ImportRequest
    from bake.app.importer import import_ansible as run_import

    result = run_import(session(), ImportRequest(playbook, out, extends, name, force))
    if as_json:
        print_json(result.to_json())
        return
    line(
        f"wrote {result.recipe}: {result.count('mapped')} tasks mapped to bake modules, "
        f"{result.count('ansible')} kept in Ansible, {result.count('dropped')} dropped"
    )
    for x in result.lines:
        arrow = "→" if x.outcome == "mapped" else " "
        line(f"  {x.outcome:<8} {x.task} {arrow} {x.detail}")
    for playbook_name in result.playbooks:
        line(f"  ansible step: {result.recipe.parent / 'ansible' / playbook_name}")
    line(f"ok  validated for: {', '.join(result.targets)}; next: bake build {result.recipe}")
