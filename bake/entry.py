"""The `bake` console script.

`bake resolve` runs on every deploy, so it takes a fast path that does not import Typer
(whose import pulls in pydantic and Rich): the same options, parsed with argparse. Every
other command — and `bake resolve --help` — goes through the Typer app.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

from bake.errors import BakeError

HTTP_FETCHER = "tuf.ngclient.urllib3_fetcher"


def defer_http_fetcher() -> None:
    """python-tuf's Updater module imports its default HTTP fetcher, and with it urllib3
    and ssl (a sixth of `bake resolve`'s start-up), although bake always passes its own
    fetcher. Before tuf is imported, stand in a module whose ``Urllib3Fetcher`` imports the
    real one when first instantiated: nothing changes for code that uses it."""
    if "tuf.ngclient" in sys.modules or HTTP_FETCHER in sys.modules:
        return
    stand_in = types.ModuleType(HTTP_FETCHER)

    def Urllib3Fetcher(*args: object, **kwargs: object) -> object:
        sys.modules.pop(HTTP_FETCHER, None)
        return importlib.import_module(HTTP_FETCHER).Urllib3Fetcher(*args, **kwargs)

    stand_in.Urllib3Fetcher = Urllib3Fetcher  # type: ignore[attr-defined]
    sys.modules[HTTP_FETCHER] = stand_in


def _resolve(argv: list[str]) -> int:
    from bake.ui.output import error, line

    parser = argparse.ArgumentParser(prog="bake resolve", add_help=False)
    parser.add_argument("spec")
    parser.add_argument("--registry", "-r")
    parser.add_argument("--trust", action="append")
    parser.add_argument("--target", "-t", default="docker")
    parser.add_argument("--format", dest="fmt", default="text")
    parser.add_argument("--lock", type=Path)
    parser.add_argument("--json", dest="as_json", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        return -1  # let Typer report the usage error
    defer_http_fetcher()
    try:
        from bake.app import deploy
        from bake.app.session import RegistryAccess, Session

        access = RegistryAccess(url=args.registry, trust=tuple(args.trust or ()))
        res = deploy.resolve(Session.load(), access, args.spec, args.target, args.lock)
        out = deploy.render(res, "json" if args.as_json else args.fmt)
    except BakeError as exc:
        if args.debug:
            raise
        error(exc, args.as_json)
        return exc.exit_code
    line(out.rstrip("\n"))
    return 0


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["resolve"] and not {"--help", "-h"} & set(argv):
        code = _resolve(argv[1:])
        if code >= 0:
            sys.exit(code)
    from bake.cli import main as typer_main

    typer_main()
