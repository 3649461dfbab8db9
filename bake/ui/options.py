"""What every command line shares: option types, error handling, the session.

The command modules in bake.cli import from here and from bake.app, never from each
other; bake.cli mounts them on one Typer app.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from bake.app.session import RegistryAccess, Session
from bake.errors import BakeError
from bake.ui.output import error

P = ParamSpec("P")
R = TypeVar("R")

DEBUG: list[bool] = [False]  # set by the root callback (`bake --debug …`)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document (for CI) instead of text.")]
TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help="Target: docker, qemu, amazon-ebs, googlecompute.")
]
TargetsOpt = Annotated[
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
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Leave upstream package state out of the bake key.")
]
RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", "-r", help="dir:PATH or oci://HOST:PORT/PREFIX (or BAKE_REGISTRY)."),
]
TrustOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trust",
        help="The registry's trusted root.json (or a root public key .pub, which must be in its first "
        "root); or BAKE_TRUST.",
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Signing key (or BAKE_SIGNING_KEY); passphrase: BAKE_KEY_PASSPHRASE."),
]


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn BakeError into message + hint + exit code (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BakeError as exc:
            if DEBUG[0]:
                raise
            error(exc, bool(kwargs.get("as_json")))
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def session() -> Session:
    """The session of this command: settings and environment, read once."""
    return Session.load()


SignWithOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sign-with",
        help="Another key to sign with (root, targets, a protected channel's); repeatable.",
    ),
]


def access(
    registry: str | None,
    trust: list[str] | None = None,
    key: str | None = None,
    sign_with: list[str] | None = None,
) -> RegistryAccess:
    return RegistryAccess(url=registry, trust=tuple(trust or ()), key=key, sign_with=tuple(sign_with or ()))


def extra_vars(pairs: list[str] | None) -> dict[str, str]:
    from bake.recipe.load import parse_extra_vars

    return parse_extra_vars(pairs or [])
