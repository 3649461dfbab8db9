"""Progress for long work: Rich on a terminal, plain timestamped lines under CI or a pipe.

Progress always goes to stderr, so `--json` keeps stdout for the result document alone.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Protocol

from bake.infra.packer import Event

_STEP_RE = re.compile(r"/(?:scripts|files)/(\d{2})-|/tmp/bake-(\d{2})-")


class Reporter(Protocol):
    def set_label(self, label: str, total_steps: int) -> None: ...
    def phase(self, name: str, detail: str = "") -> None: ...
    def packer_event(self, event: Event) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


def step_of(message: str) -> int | None:
    m = _STEP_RE.search(message)
    if m is None:
        return None
    return int(m.group(1) or m.group(2))


class PlainReporter:
    """One line per phase and per step; Packer's own lines with --verbose."""

    def __init__(self, total_steps: int = 0, verbose: bool = False, stream: Any = None):
        self.total = total_steps
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.current = 0
        self.label = ""

    def _write(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        self.stream.write(f"[{elapsed:7.1f}s] {self.label}{text}\n")
        self.stream.flush()

    def phase(self, name: str, detail: str = "") -> None:
        self._write(f"{name}" + (f": {detail}" if detail else ""))

    def set_label(self, label: str, total_steps: int) -> None:
        self.label = f"{label} " if label else ""
        self.total = total_steps
        self.current = 0

    def packer_event(self, event: Event) -> None:
        if event.type != "ui":
            return
        msg = event.message
        k = step_of(msg)
        if k is not None and k != self.current:
            self.current = k
            self._write(f"step {k} of {self.total}")
        if self.verbose:
            for line in msg.splitlines():
                self._write("  " + line.strip())

    def note(self, text: str) -> None:
        self._write(text)

    def close(self) -> None:
        pass


class RichReporter(PlainReporter):
    """A live status line with step k of n and elapsed time."""

    def __init__(self, total_steps: int = 0, verbose: bool = False):
        super().__init__(total_steps, verbose)
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.status = self.console.status("starting")
        self.status.start()
        self.phase_name = ""

    def _write(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        self.console.print(f"[dim]{elapsed:7.1f}s[/dim] {self.label}{text}", markup=True, highlight=False)

    def phase(self, name: str, detail: str = "") -> None:
        self.phase_name = name
        self.status.update(f"{self.label}{name}")
        super().phase(name, detail)

    def packer_event(self, event: Event) -> None:
        k = step_of(event.message) if event.type == "ui" else None
        if k is not None:
            self.status.update(f"{self.label}{self.phase_name}: step {k} of {self.total}")
        super().packer_event(event)

    def close(self) -> None:
        self.status.stop()


def make_reporter(verbose: bool = False, plain: bool = False) -> PlainReporter:
    if not plain and sys.stderr.isatty():
        return RichReporter(verbose=verbose)
    return PlainReporter(verbose=verbose)
