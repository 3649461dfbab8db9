"""The `bake` console script.

`bake resolve` runs on every deploy, so it takes a fast path that does not import Typer
(whose import pulls in pydantic and Rich): the same options, parsed with argparse. Every
other command — and `bake resolve --help` — goes through the Typer app.
"""

from __future__ import annotations

import argparse
import sys

from bake.errors import BakeError


def _resolve(argv: list[str]) -> int:
    from bake.ui.output import error

    parser = argparse.ArgumentParser(prog="bake resolve", add_help=False)
    parser.add_argument("spec")
    parser.add_argument("--registry", "-r")
    parser.add_argument("--trust", action="append")
    parser.add_argument("--target", "-t", default="docker")
    parser.add_argument("--format", dest="fmt", default="text")
    parser.add_argument("--json", dest="as_json", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        return -1  # let Typer report the usage error
    try:
        from bake.app import deploy
        from bake.app.session import RegistryAccess, Session

        access = RegistryAccess(url=args.registry, trust=tuple(args.trust or ()))
        res = deploy.resolve(Session.load(), access, args.spec, args.target)
        out = deploy.render(res, "json" if args.as_json else args.fmt)
    except BakeError as exc:
        if args.debug:
            raise
        error(exc, args.as_json)
        return exc.exit_code
    sys.stdout.write(out.rstrip("\n") + "\n")
    return 0


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["resolve"] and not {"--help", "-h"} & set(argv):
        code = _resolve(argv[1:])
        if code >= 0:
            sys.exit(code)
    from bake.cli import main as typer_main

    typer_main()
