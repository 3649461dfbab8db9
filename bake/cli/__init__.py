"""The `bake` command line: parse, call a use case in bake.app, render its result.

The command modules (recipes, build, registry, deploy, keys, rollout) each import only bake.app and
bake.ui; this package mounts their functions on one Typer app. Heavy modules (pydantic
models, Jinja2, Rich) load inside the commands that need them, so that a deployer's
`bake resolve` starts fast (it even has a path without Typer: bake/entry.py).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from bake import __version__
from bake.cli import build, catalog, deploy, keys, recipes, registry, rollout
from bake.ui.options import DEBUG
from bake.ui.output import line

app = typer.Typer(
    name="bake",
    help="Bake declarative recipes into verified, signed, pinnable golden images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lock_app = typer.Typer(help="Lock files: pinned image digests for deployers.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")
keys_app = typer.Typer(help="Who signs what in a registry: roles, keys, thresholds.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

COMMANDS = (
    ("validate", recipes.validate),
    ("plan", recipes.plan),
    ("render", recipes.render),
    ("schema", recipes.schema),
    ("init", recipes.init),
    ("import-ansible", recipes.import_ansible),
    ("build", build.build),
    ("verify", build.verify),
    ("keygen", registry.keygen),
    ("publish", registry.publish),
    ("promote", registry.promote),
    ("rollback", registry.rollback),
    ("revoke", registry.revoke),
    ("refresh", registry.refresh),
    ("ls", registry.list_images),
    ("history", registry.history),
    ("outdated", registry.outdated),
    ("resolve", deploy.resolve),
    ("fetch", deploy.fetch),
    ("pin", deploy.pin),
    ("drift", deploy.drift),
    ("catalog", catalog.catalog_command),
    ("rollout", rollout.rollout),
    ("deployments", rollout.deployments),
    ("reconcile", rollout.reconcile),
    ("sign", keys.sign),
    ("pending", keys.pending),
)
KEYS = (
    ("init", keys.init),
    ("show", keys.show),
    ("add", keys.add),
    ("revoke", keys.revoke),
    ("rotate", keys.rotate),
    ("protect", keys.protect),
)


def flowing(command: Callable[..., None]) -> str:
    """A command's docstring as help text: lines of a paragraph joined (the terminal wraps
    them), paragraphs kept."""
    doc = inspect.getdoc(command) or ""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in doc.split("\n\n"))


for name, command in COMMANDS:
    app.command(name, help=flowing(command))(command)
for name, keys_command in KEYS:
    keys_app.command(name, help=flowing(keys_command))(keys_command)
lock_app.command("check", help=flowing(deploy.lock_check))(deploy.lock_check)


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
    DEBUG[0] = debug


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


__all__ = ["app", "main"]
