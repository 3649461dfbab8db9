"""Rendering results for people (Rich) or machines (`--json`), and errors for both."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bake.errors import BakeError
from bake.textsafe import for_terminal, hide_credentials


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def print_json(obj: Any) -> None:
    # json escapes control characters itself; a URL's password is taken out here too
    sys.stdout.write(hide_credentials(json.dumps(obj, indent=2, sort_keys=True, default=str)) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False) -> Any:
    from rich.console import Console  # lazy: keeps `bake resolve` start-up fast

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def error(exc: BakeError, as_json: bool) -> None:
    if as_json:
        print_json({"ok": False, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        return
    sys.stderr.write(f"error: {for_terminal(exc.message)}\n")
    if exc.hint:
        for line in exc.hint.splitlines():
            sys.stderr.write(f"  hint: {for_terminal(line)}\n")
    sys.stderr.flush()


def warn(lines: Sequence[str]) -> None:
    """Warnings go to stderr: stdout keeps a command's result."""
    for text in lines:
        sys.stderr.write(for_terminal(text) + "\n")
    sys.stderr.flush()


def line(text: str) -> None:
    """Print a line of a command's output: control characters escaped, URL passwords out."""
    sys.stdout.write(for_terminal(text) + "\n")
    sys.stdout.flush()
