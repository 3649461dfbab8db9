"""testinfra's docker backend with one shell per container, not one `docker exec` per command.

testinfra runs every command of every check as its own ``docker exec`` (~65 ms each: a
process for the client and one the engine starts in the container); web's twelve checks
make thirty of them. Here one ``docker exec -i CONTAINER /bin/sh`` stays open and each
command is written to it as ``/bin/sh -c 'COMMAND' </dev/null``: a fresh shell per
command (a ``cd``, a variable or an ``exit`` does not outlive it; a syntax error is that
command's own exit status 2) that reads nothing of ours. After it the shell prints a
random mark with the exit status on stdout, and the mark on stderr; what came before the
marks is the command's output. Results are what ``docker exec`` gives: the exit status,
stdout and stderr apart.

This file is copied beside the generated checks and registered by their conftest as the
``bake-docker://[USER@]CONTAINER`` backend: the pytest child imports nothing of bake.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
from typing import Any

from testinfra.backend import base

NAME = "bake-docker"
LOST = 255  # the exit status when the container's shell is gone (as `docker exec` gives)


class _Stream:
    """Everything a pipe yields, kept by a thread so neither pipe can fill and block."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.data = bytearray()
        self.closed = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.pipe.close()

    def _pump(self, pipe: Any) -> None:
        while chunk := pipe.read1(1 << 16):
            with self.cond:
                self.data += chunk
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def until(self, mark: bytes) -> tuple[bytes, bytes] | None:
        """What came before ``\\n<mark>`` and the rest of that line; None at end of stream."""
        with self.cond:
            while True:
                at = self.data.find(b"\n" + mark)
                if at >= 0:
                    end = self.data.find(b"\n", at + 1 + len(mark))
                    if end >= 0:
                        before, line = bytes(self.data[:at]), bytes(self.data[at + 1 + len(mark) : end])
                        del self.data[: end + 1]
                        return before, line
                if self.closed:
                    return None
                self.cond.wait()


class _Shell:
    def __init__(self, container: str, user: str | None) -> None:
        argv = ["docker", "exec", "-i", *(("-u", user) if user else ()), container, "/bin/sh"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.out, self.err = _Stream(self.proc.stdout), _Stream(self.proc.stderr)

    def run(self, command: bytes) -> tuple[int, bytes, bytes] | None:
        mark = secrets.token_hex(16).encode()
        quoted = b"'" + command.replace(b"'", b"'\\''") + b"'"
        script = (
            b"/bin/sh -c " + quoted + b" </dev/null; "
            b"printf '\\n%s %d\\n' " + mark + b" $?; printf '\\n%s\\n' " + mark + b" >&2\n"
        )
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(script)
            self.proc.stdin.flush()
        except OSError:
            return None
        out, err = self.out.until(mark), self.err.until(mark)
        if out is None or err is None:
            return None
        return int(out[1].strip() or LOST), out[0], err[0]

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


class ShellBackend(base.BaseBackend):  # type: ignore[misc]  # testinfra has no type information
    NAME = NAME

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name, self.user = self.parse_containerspec(name)
        self._shell: _Shell | None = None
        super().__init__(self.name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.encode(self.get_command(command, *args))
        for _ in range(2):  # a shell that died (the container restarted) is opened again once
            if self._shell is None:
                self._shell = _Shell(self.name, self.user)
            got = self._shell.run(cmd)
            if got is not None:
                return self.result(got[0], cmd, got[1], got[2])
            self.close()
        return self.result(LOST, cmd, b"", b"the container's shell ended (is the container running?)")

    def close(self) -> None:
        """End the shell (the next command opens another)."""
        if self._shell is not None:
            self._shell.close()
            self._shell = None
