"""The `bake` command line: parse, call a stage, render its result. Nothing else.

Heavy modules (pydantic models, Jinja2, Rich) are imported inside the commands that need
them, so that a deployer's `bake resolve` starts fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bake import __version__
from bake.errors import BakeError
from bake.output import error, line, print_json

app = typer.Typer(
    name="bake",
    help="Bake declarative recipes into verified, signed, pinnable golden images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lock_app = typer.Typer(help="Lock files: pinned image digests for deployers.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")

_STATE: dict[str, bool] = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document (for CI) instead of text.")]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", help="Target(s): docker, qemu, amazon-ebs, googlecompute."),
]
VarFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--var-file", "-f", help="YAML file of vars (over the recipe's)."),
]
ExtraOpt = Annotated[
    list[str] | None, typer.Option("--extra-var", "-e", help="key=value (wins over everything).")
]
PackerVersionOpt = Annotated[
    str | None,
    typer.Option("--packer-version", help="Render for this Packer version instead of detecting it."),
]


def handled(fn: F) -> F:
    """Turn BakeError into message + hint + exit code (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BakeError as exc:
            if _STATE["debug"]:
                raise
            error(exc, bool(kwargs.get("as_json")))
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


def _version(value: bool) -> None:
    if value:
        line(f"bake {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    _STATE["debug"] = debug


def _packer_info(override: str | None) -> Any:
    from bake import packer, process

    if override:
        return packer.PackerInfo(packer.parse_version(f"Packer v{override}"))
    from bake.project import find_root, load_settings, state_dir

    root = find_root()
    return packer.detect_cached(process.run, state_dir(root, load_settings(root)) / "packer-version.json")


def _search_path() -> list[Path]:
    from bake.project import find_root, load_settings

    root = find_root()
    return [root / p for p in load_settings(root).recipes_path]


@app.command()
@handled
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe files.")],
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check recipes: syntax, fields, vars, referenced files. Exit 2 on the first bad one."""
    from bake.recipe.load import parse_extra_vars, resolve_targets

    extra = parse_extra_vars(extra_var or [])
    results = []
    for path in recipes:
        resolved = resolve_targets(
            path, var_files=var_file or [], extra_vars=extra, search_path=_search_path()
        )
        first = next(iter(resolved.values()))
        results.append(
            {
                "recipe": str(path),
                "name": first.name,
                "version": first.recipe.version,
                "targets": list(resolved),
            }
        )
    if as_json:
        print_json({"ok": True, "recipes": results})
    else:
        for r in results:
            line(f"ok  {r['recipe']}  {r['name']} {r['version']}  targets: {', '.join(r['targets'])}")


@app.command()
@handled
def plan(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    target: TargetOpt = None,
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    packer_version: PackerVersionOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Leave upstream package state out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show resolved vars, steps per target, the parent chain, the bake key and which
    inputs changed since the last good bake."""
    from bake.plan import changed_inputs, plan_document, plan_recipe
    from bake.recipe.load import parse_extra_vars
    from bake.record import latest_good
    from bake.upstream import Upstream
    from bake.upstream import offline as no_upstream

    plans = plan_recipe(
        recipe,
        _packer_info(packer_version),
        targets=target or [],
        var_files=var_file or [],
        extra_vars=parse_extra_vars(extra_var or []),
        search_path=_search_path(),
        upstream=no_upstream if offline else Upstream(),
    )
    state, _settings = _runtime()
    docs = []
    for p in plans:
        doc = plan_document(p)
        last = latest_good(state, p.name, p.target)
        doc["last_good"] = (
            {"bake_key": last.bake_key, "created": last.created, "changed": changed_inputs(p, last.inputs)}
            if last
            else None
        )
        docs.append(doc)
    if as_json:
        print_json({"ok": True, "plans": docs})
        return
    for d in docs:
        line(f"{d['name']} {d['version']}  target {d['target']}")
        line(f"  bake key  {d['bake_key']}")
        line(f"  chain     {' → '.join(d['chain'])}")
        line(f"  packer    {d['packer_version']}")
        line("  vars      " + (", ".join(f"{k}={v!r}" for k, v in d["vars"].items()) or "(none)"))
        for s in d["steps"]:
            line(f"  step {s['index']:>2}   {s['module']:<9} {s['name']}")
        line(f"  verify    {d['verify']} checks")
        last = d["last_good"]
        if last is None:
            line("  last good (none baked here yet)")
        elif last["bake_key"] == d["bake_key"]:
            line(f"  last good {last['created']}: same bake key, nothing to bake")
        else:
            line(f"  last good {last['created']}: changed since: {', '.join(last['changed'])}")


@app.command()
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
    from bake.compile import compile_plan, write_tree
    from bake.plan import plan_recipe
    from bake.recipe.load import parse_extra_vars

    (p,) = plan_recipe(
        recipe,
        _packer_info(packer_version),
        targets=[target],
        var_files=var_file or [],
        extra_vars=parse_extra_vars(extra_var or []),
        search_path=_search_path(),
    )
    rendered = compile_plan(p)
    template = write_tree(rendered, out)
    if as_json:
        print_json(
            {
                "ok": True,
                "template": str(template),
                "files": sorted(rendered.files),
                "bake_key": p.key,
            }
        )
    else:
        line(f"wrote {template} (+{len(rendered.files) - 1} files)  bake key {p.key}")


@app.command()
@handled
def schema(as_json: JsonOpt = False) -> None:
    """Print the JSON Schema of recipes (for editors)."""
    from bake.recipe.schema import recipe_schema

    print_json(recipe_schema())


@app.command()
@handled
def init(
    name: Annotated[str, typer.Argument(help="Recipe name (lowercase).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write NAME.yaml.")] = Path(),
    extends: Annotated[str | None, typer.Option(help="Parent recipe (default: a Debian base).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Scaffold a recipe that validates."""
    from bake.recipe.scaffold import scaffold

    path = scaffold(name, directory, extends)
    if as_json:
        print_json({"ok": True, "recipe": str(path)})
    else:
        line(f"wrote {path}; next: bake validate {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


def _runtime() -> tuple[Path, Any]:
    from bake.project import find_root, load_settings, state_dir

    root = find_root()
    settings = load_settings(root)
    return state_dir(root, settings), settings


@app.command()
@handled
def verify(
    recipe: Annotated[Path, typer.Argument(help="Recipe whose verify: checks to run.")],
    image: Annotated[str, typer.Option("--image", help="Image to check (ID, REF or REF@sha256:…).")],
    var_file: VarFileOpt = None,
    extra_var: ExtraOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a recipe's verify checks against a fresh container of an image."""
    from bake import docker, process
    from bake.recipe.load import parse_extra_vars, resolve
    from bake.verify import verify_container_image

    state, _settings = _runtime()
    r = resolve(
        recipe,
        "docker",
        var_files=var_file or [],
        extra_vars=parse_extra_vars(extra_var or []),
        search_path=_search_path(),
    )
    with process.terminate_as_interrupt(), docker.engine(process.run, state) as eng:
        info = docker.inspect_image(process.run, eng, image)
        if info is None:
            raise BakeError(f"no image {image} in the Docker engine at {eng.host}", "pull or load it first")
        # run the image as a deployer would when it has an entrypoint; otherwise keep it alive
        own = bool((info.get("Config") or {}).get("Entrypoint"))
        report = verify_container_image(
            process.run, eng, image, r.name, r.verify, state / "verify" / r.name, own_entrypoint=own
        )
    if as_json:
        print_json(report.to_json())
    else:
        for res in report.results:
            mark = "ok  " if res.outcome == "passed" else "FAIL"
            line(
                f"{mark} {res.title}"
                + (
                    ""
                    if res.outcome == "passed"
                    else f"\n     {res.message.splitlines()[0] if res.message else ''}"
                )
            )
        line(f"{sum(x.outcome == 'passed' for x in report.results)} passed, {len(report.failed)} failed")
    if not report.ok:
        raise typer.Exit(1)


from bake import cli_build, cli_drift, cli_registry  # noqa: E402 - registers their commands on `app`

__all__ = ["app", "cli_build", "cli_drift", "cli_registry", "main"]
