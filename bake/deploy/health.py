"""A rollout's health gate: the image's own verify checks as a container health check (pure).

Docker runs a service's health command inside each task's container. A swarm task joins
the service's DNS, and a rolling update moves on, only once it is healthy; a task that
turns unhealthy is replaced, and an update whose new task fails is rolled back. So the
gate is what decides whether a new image takes traffic.

The command is a POSIX sh script compiled from the image's `port` and `command` checks as
its signed test result carries them (the same checks that verified the image at bake
time; other kinds check files and packages, which cannot change between verification and
a fresh container of the same digest). Every value enters the script shell-quoted. Each
check runs under ``timeout`` when the image has it: a check that passes, but slowly, fails
the gate, because a probe must answer promptly. The first failure prints
``bake-health: FAILED: TITLE: why`` and exits 1; Docker keeps that line in the container's
health log, so a failed rollout names the check.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from bake.errors import BakeError
from bake.recipe.models import Check, CommandCheck, PortCheck
from bake.verify.checks import describe

MARK = "bake-health:"
FAILED = f"{MARK} FAILED: "
OVERRIDE = "--health-cmd"  # the title of a health command given on the command line
_STATES = {"tcp": "0A", "udp": "07"}  # LISTEN, and a bound UDP socket, in /proc/net/*
_USAGE = 2


@dataclass(frozen=True)
class HealthSettings:
    """How often and how patiently Docker probes (seconds), and how many failures in a row
    make a task unhealthy. A probe runs each check with ``timeout`` seconds."""

    interval: float = 2.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 5.0

    def validated(self) -> HealthSettings:
        for name in ("interval", "timeout", "start_period"):
            value = getattr(self, name)
            if not 0 <= value <= 3600 or (name != "start_period" and value < 0.1):
                raise BakeError(
                    f"--health-{name.replace('_', '-')} {value:g} is out of range",
                    "give seconds between 0.1 and 3600",
                    _USAGE,
                )
        if not 1 <= self.retries <= 100:
            raise BakeError(f"--health-retries {self.retries} is out of range", "give 1 to 100", _USAGE)
        return self


@dataclass(frozen=True)
class HealthCheck:
    """A container health check: the shell command and Docker's probe settings."""

    command: str  # run by Docker as CMD-SHELL (`/bin/sh -c`)
    checks: tuple[str, ...]  # what it checks, by title
    settings: HealthSettings = HealthSettings()

    @property
    def probe_timeout(self) -> float:
        """Docker's limit for one probe: every check's own limit, and a margin for the shell
        (a backstop: the script times each check out itself when the image has `timeout`)."""
        return self.settings.timeout * max(1, len(self.checks)) + 2.0

    def docker_args(self) -> tuple[str, ...]:
        s = self.settings
        return (
            "--health-cmd",
            self.command,
            "--health-interval",
            _duration(s.interval),
            "--health-timeout",
            _duration(self.probe_timeout),
            "--health-retries",
            str(s.retries),
            "--health-start-period",
            _duration(s.start_period),
        )


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def gate_checks(checks: Sequence[Check]) -> list[Check]:
    """The checks a health gate runs: `port` and `command` checks, in their order."""
    return [c for c in checks if c.port is not None or c.command is not None]


def _fail(title: str, why: str) -> str:
    return f"fail {shlex.quote(f'{title}: {why}')}"


def _command(c: CommandCheck, title: str, limit: str) -> list[str]:
    lines = [
        f"out=$($T sh -c {shlex.quote(c.run)} 2>/dev/null); rc=$?",
        f'if [ -n "$T" ] && [ "$rc" -eq 124 ]; then {_fail(title, f"no answer within {limit}")}; fi',
        f'[ "$rc" -eq {c.rc} ] || {_fail(title, f"exit status is not {c.rc}")}',
    ]
    if c.stdout is not None:
        lines.append(
            f'case "$out" in *{shlex.quote(c.stdout)}*) ;; '
            f"*) {_fail(title, f'the output lacks {c.stdout!r}')} ;; esac"
        )
    return lines


def _port(c: PortCheck, title: str) -> str:
    # /proc/net/{tcp,udp}[6] rows: "sl local_address rem_address st …", addresses as HEX:PORT
    pattern = f"^ *[0-9]+: [0-9A-Fa-f]+:{c.port:04X} [0-9A-Fa-f]+:[0-9A-Fa-f]+ {_STATES[c.proto]} "
    files = f"/proc/net/{c.proto} /proc/net/{c.proto}6"
    probe = f"grep -Eq {shlex.quote(pattern)} {files} 2>/dev/null"
    if c.listening:
        return f"{probe} || {_fail(title, f'nothing listens on {c.proto} port {c.port}')}"
    return f"! {probe} || {_fail(title, f'{c.proto} port {c.port} is listening')}"


def script(checks: Sequence[Check], timeout: float) -> str:
    """The health command for ``checks`` (port and command checks; others are left out)."""
    limit = f"{timeout:g}s"
    lines = [
        f'fail() {{ echo "{FAILED}$1"; exit 1; }}',
        f'T=; command -v timeout >/dev/null 2>&1 && T="timeout {timeout:g}"',
    ]
    for check in gate_checks(checks):
        title = describe(check)
        if check.command is not None:
            lines += _command(check.command, title, limit)
        elif check.port is not None:
            lines.append(_port(check.port, title))
    lines.append(f"echo {shlex.quote(f'{MARK} ok')}")
    return "\n".join(lines)


def from_checks(checks: Sequence[Check], settings: HealthSettings, where: str) -> HealthCheck:
    """The health check of an image whose verify checks are ``checks``. An image with no
    port or command check has no gate to pass: refused, so nothing rolls out unchecked."""
    gated = gate_checks(checks)
    if not gated:
        raise BakeError(
            f"{where} has no port or command check to gate a rollout with",
            "add a `port:` or `command:` check to its recipe's verify: section and bake it again, "
            "or give the gate yourself with --health-cmd CMD",
        )
    return HealthCheck(script(gated, settings.timeout), tuple(describe(c) for c in gated), settings)


def override(command: str, settings: HealthSettings) -> HealthCheck:
    """A health command given on the command line, run as it is."""
    if not command.strip():
        raise BakeError("--health-cmd is empty", "give a shell command that exits 0 when healthy", _USAGE)
    return HealthCheck(command, (OVERRIDE,), settings)


def failed_check(failed: Sequence[str]) -> str | None:
    """Why a container's probes failed, from their outputs (oldest first): the check the
    newest one named and why, else Docker's own verdict (e.g. a probe that timed out)."""
    rows = [r.strip() for output in failed for r in output.splitlines() if r.strip()]
    marked = [r.removeprefix(FAILED) for r in rows if r.startswith(FAILED)]
    found = marked or rows
    return found[-1] if found else None
