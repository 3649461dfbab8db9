"""Rendering results for people (Rich) or machines (`--json`), and errors for both."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from bake.errors import BakeError


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False) -> Any:
    from rich.console import Console  # lazy: keeps `bake resolve` start-up fast

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def error(exc: BakeError, as_json: bool) -> None:
    if as_json:
        print_json({"ok": False, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        return
    sys.stderr.write(f"error: {exc.message}\n")
    if exc.hint:
        for line in exc.hint.splitlines():
            sys.stderr.write(f"  hint: {line}\n")
    sys.stderr.flush()


def line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
