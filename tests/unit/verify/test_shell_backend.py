"""bake.verify.shell_backend: one shell, many commands, each with its own status and output.

A `docker` on PATH that only runs /bin/sh plays the container; what is tested is the
protocol over the shell's pipes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bake.verify.shell_backend import LOST, ShellBackend


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShellBackend]:
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    # `docker exec -i [-u USER] CONTAINER /bin/sh`: the container is this machine; a
    # container named "gone" has stopped
    fake.write_text(
        '#!/bin/sh\nfor a; do [ "$a" = gone ] && { echo "not running" >&2; exit 1; }; done\nexec /bin/sh\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    backend = ShellBackend("root@web-1")
    yield backend
    backend.close()


def test_each_command_has_its_status_stdout_and_stderr(host: ShellBackend) -> None:
    r = host.run("echo out; echo err >&2; exit 3")
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = host.run("printf 'no newline'")
    assert (r.rc, r.stdout, r.stderr) == (0, "no newline", "")
    assert host.run("true").stdout == ""


def test_commands_do_not_share_a_shell(host: ShellBackend) -> None:
    host.run("cd /tmp; X=1; exit 0")
    assert host.run("pwd").stdout != "/tmp\n"
    assert host.run("echo ${X:-unset}").stdout == "unset\n"


def test_quotes_stdin_and_syntax_errors_stay_the_command_s_own(host: ShellBackend) -> None:
    assert host.run("echo %s", 'it\'s "quoted"').stdout == 'it\'s "quoted"\n'
    assert host.run("cat").stdout == ""  # reads nothing of the protocol
    broken = host.run("echo 'unterminated")
    assert broken.rc == 2 and "unterminated" not in broken.stdout
    assert host.run("echo still here").stdout == "still here\n"


def test_much_output_on_both_streams_does_not_block(host: ShellBackend) -> None:
    r = host.run("yes a | head -c 300000 >&2; yes b | head -c 300000")
    assert (len(r.stdout), len(r.stderr)) == (300000, 300000)
    assert set(r.stdout) == {"b", "\n"} and set(r.stderr) == {"a", "\n"}


def test_a_shell_that_ends_is_opened_again(host: ShellBackend) -> None:
    host.run("true")
    assert host._shell is not None
    host._shell.proc.kill()
    assert host.run("echo back").stdout == "back\n"


def test_a_stopped_container_gives_a_failed_command(tmp_path: Path, host: ShellBackend) -> None:
    gone = ShellBackend("root@gone")
    r = gone.run("true")
    assert r.rc == LOST and "shell ended" in r.stderr
    assert gone._shell is None
