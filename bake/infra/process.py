"""The one place that starts processes.

argv lists only (never a shell), an allow-listed environment, stdin from /dev/null unless
input is given, output streamed line by line to a callback while the last lines are kept
for the error message, timeouts, and SIGINT/SIGTERM forwarded to the child so that tools
like Packer run their own cleanup (remove build containers, kill VMs) before we exit.
On failure the error carries a copy-pasteable ``shlex.join`` of the command. Values marked
sensitive are replaced by ``<redacted>`` in everything we keep or show.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from bake.errors import BakeError, ToolError

ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "PACKER_TMP_DIR",
    "PACKER_CACHE_DIR",
    "PACKER_PLUGIN_PATH",
    "PACKER_LOG",
    "PACKER_LOG_PATH",
    "CHECKPOINT_DISABLE",
    "SOURCE_DATE_EPOCH",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)

# What a child that runs code someone else wrote gets (a recipe's or an attestation's
# testinfra checks): no credentials, no registry or signing secrets, no proxy settings.
ENV_MINIMAL = ("PATH", "LANG", "LC_ALL", "TZ")

INSTALL_HINTS = {
    "packer": "install Packer: `apt-get install packer` (Debian) or from the HashiCorp releases",
    "docker": "install Docker: `apt-get install docker.io`",
    "dockerd": "install Docker: `apt-get install docker.io`",
    "mmdebstrap": "install mmdebstrap: `apt-get install mmdebstrap`",
    "skopeo": "install skopeo: `apt-get install skopeo`",
    "qemu-img": "install qemu: `apt-get install qemu-utils`",
    "qemu-system-x86_64": "install qemu: `apt-get install qemu-system-x86`",
    "openssl": "install OpenSSL: `apt-get install openssl`",
}

TAIL_LINES = 40


class Interrupted(BakeError):
    """We received SIGINT/SIGTERM while a child ran; the child was asked to clean up."""

    exit_code = 130


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Call:
    """What to run. Built in pure code; run by a Runner."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    timeout: float | None = None
    input: bytes | None = None
    check: bool = True
    sensitive: tuple[str, ...] = ()
    interrupt: signal.Signals = signal.SIGINT
    isolated: bool = False  # only ENV_MINIMAL and `env` reach the child, nothing else of ours


LineSink = Callable[[str], None]


class Runner(Protocol):
    def __call__(self, call: Call, on_line: LineSink | None = None) -> Result: ...


REDACTED = "<redacted>"
MIN_LINE = 4  # a line of a multi-line secret shorter than this is left alone ("{", "}")
MIN_ENCODED = 8  # an encoded fragment shorter than this could occur by chance


def _base64_fragments(raw: bytes) -> set[str]:
    """What ``raw`` looks like inside any base64 text, at each of the three alignments it
    can have there: the characters that depend on its bytes alone (standard and URL-safe
    alphabets, so both `Basic …` headers and JWT-style strings are covered)."""
    out = set()
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw).decode("ascii")
        start, end = (8 * k + 5) // 6, (8 * (k + len(raw))) // 6
        fragment = encoded[start:end]
        if len(fragment) >= MIN_ENCODED:
            out |= {fragment, fragment.replace("+", "-").replace("/", "_")}
    return out


def secret_forms(secret: str) -> set[str]:
    """Every form in which ``secret`` may show up in output: itself, each line of a
    multi-line value (a PEM key, JSON credentials: output is redacted line by line), and
    its base64, URL-encoded and JSON-escaped forms."""
    if not secret:
        return set()
    forms = {secret}
    lines = [x.strip() for x in secret.splitlines()]
    lines = [x for x in lines if len(x) >= MIN_LINE] if len(lines) > 1 else []
    forms |= set(lines)
    for value in {secret, secret.strip()}:
        forms |= {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), json.dumps(value)[1:-1]}
    for value in {secret, secret.strip(), *lines}:  # lines too: an encoded PEM may be cut
        forms |= _base64_fragments(value.encode())
    return {f for f in forms if f}


@functools.lru_cache(maxsize=32)
def _redactor(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms = set().union(*(secret_forms(s) for s in secrets)) if secrets else set()
    if not forms:
        return None
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every form of every secret (see :func:`secret_forms`) replaced."""
    pattern = _redactor(tuple(secrets))
    return text if pattern is None else pattern.sub(REDACTED, text)


def child_env(
    extra: Mapping[str, str], base: Mapping[str, str] | None = None, *, isolated: bool = False
) -> dict[str, str]:
    source = os.environ if base is None else base
    env = {k: source[k] for k in (ENV_MINIMAL if isolated else ENV_ALLOW) if k in source}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if not isolated:
        env["CHECKPOINT_DISABLE"] = "1"  # Packer: no update checks (no network here, and faster)
    env.update(extra)
    return env


def describe(call: Call) -> str:
    return redact(shlex.join(call.argv), call.sensitive)


def _popen(call: Call, stdout: int | IO[bytes], stderr: int) -> subprocess.Popen[bytes]:
    """Start `call` in a new session (a terminal's Ctrl-C reaches us, and we forward it
    once); a missing tool is a ToolError with exit code 127 and an install hint."""
    tool = Path(call.argv[0]).name
    try:
        return subprocess.Popen(
            list(call.argv),
            stdin=subprocess.PIPE if call.input is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=child_env(call.env, isolated=call.isolated),
            cwd=os.fspath(call.cwd) if call.cwd else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolError(
            f"{tool} not found (command: {describe(call)})",
            INSTALL_HINTS.get(tool, f"install {tool} and make sure it is on PATH"),
            exit_code=127,
        ) from None


def run(call: Call, on_line: LineSink | None = None) -> Result:  # noqa: PLR0915 - one linear protocol
    """The real runner."""
    start = time.monotonic()
    tool = Path(call.argv[0]).name
    proc = _popen(call, subprocess.PIPE, subprocess.PIPE)
    out_lines: list[str] = []
    err_tail: deque[str] = deque(maxlen=TAIL_LINES)
    interrupted: list[int] = []

    def pump_err() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = redact(raw.decode("utf-8", "replace").rstrip("\n"), call.sensitive)
            err_tail.append(line)
            if on_line is not None:
                on_line(line)

    def pump_in() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(call.input or b"")
        proc.stdin.close()

    threads = [threading.Thread(target=pump_err, daemon=True)]
    if call.input is not None:
        threads.append(threading.Thread(target=pump_in, daemon=True))
    for t in threads:
        t.start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The whole process group: Packer and the `docker exec`/ssh it runs a step in, so
        # a long step ends now and Packer goes on to its cleanup (removing the container).
        # A second signal escalates to SIGTERM.
        interrupted.append(signum)
        sig = call.interrupt if len(interrupted) == 1 else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    timer = threading.Timer(call.timeout, forward, (signal.SIGALRM, None)) if call.timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    with _forwarding(forward):
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = redact(raw.decode("utf-8", "replace").rstrip("\n"), call.sensitive)
            out_lines.append(line)
            if on_line is not None:
                on_line(line)
        rc = _wait(proc, interrupted)
    if timer:
        timer.cancel()
    for t in threads:
        t.join(timeout=5)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    result = Result(
        argv=call.argv,
        returncode=rc,
        stdout="\n".join(out_lines) + ("\n" if out_lines else ""),
        stderr="\n".join(err_tail),
        seconds=time.monotonic() - start,
    )
    if interrupted and interrupted[0] == signal.SIGALRM:
        raise ToolError(
            f"{tool} timed out after {call.timeout:.0f}s: {describe(call)}",
            "raise the timeout or look at the last output above",
        )
    if interrupted:
        raise Interrupted(
            f"interrupted ({signal.Signals(interrupted[0]).name}); "
            f"{tool} was asked to clean up and exited {rc}"
        )
    if call.check and rc != 0:
        raise failure(call, result)
    return result


def failure(call: Call, result: Result) -> ToolError:
    tool = Path(call.argv[0]).name
    tail = (result.stderr.strip() or "\n".join(result.stdout.strip().splitlines()[-TAIL_LINES:])).strip()
    if result.returncode < 0:
        status = f"was killed by {signal.Signals(-result.returncode).name}"
    else:
        status = f"exited {result.returncode}"
    message = f"{tool} {status}: {describe(call)}"
    if tail:
        message += "\n" + "\n".join("  | " + line for line in tail.splitlines()[-TAIL_LINES:])
    return ToolError(message, None if result.returncode != 127 else INSTALL_HINTS.get(tool))


def _wait(proc: subprocess.Popen[bytes], interrupted: list[int], grace: float = 120.0) -> int:
    """Wait for the child; after an interrupt give it `grace` seconds to clean up."""
    while True:
        try:
            return proc.wait(timeout=0.2 if not interrupted else grace)
        except subprocess.TimeoutExpired:
            if interrupted:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait()


@contextlib.contextmanager
def _forwarding(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def output(runner: Runner, *argv: str, env: Mapping[str, str] | None = None) -> str:
    """Run and return stdout (stripped); raise on failure."""
    return runner(Call(argv=tuple(argv), env=dict(env or {}))).stdout.strip()


@dataclass(frozen=True)
class Spawned:
    """A long-running child (a private dockerd, a registry, a VM) we must stop by PID."""

    pid: int
    argv: tuple[str, ...]
    log: Path
    _proc: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                return self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._proc.wait()


def spawn(call: Call, log: Path) -> Spawned:
    """Start a background process with output to `log`; the caller stops it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        proc = _popen(call, sink, subprocess.STDOUT)
    return Spawned(pid=proc.pid, argv=call.argv, log=log, _proc=proc)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into an exception while a bake runs, so cleanup code gets to run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(f"interrupted ({signal.Signals(signum).name})")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


STREAM_CHUNK = 1 << 20
_EXIT_GRACE = 0.5


@contextlib.contextmanager
def stream(call: Call) -> Iterator[IO[bytes]]:  # noqa: PLR0915 - one linear protocol, like run()
    """Run *call* and yield its stdout as a binary stream, for output too big to keep.

    The last lines of stderr are kept for the error message. When the block ends normally
    the rest of stdout is drained and the exit status checked (a ToolError as from `run`).
    When the block raises, the child gets a moment to exit by itself (a failed tool closes
    its stdout and exits: its own error is the one worth showing, raised from the reader's)
    and is then killed with its process group, so a reader that gives up never leaves it
    blocked on a full pipe. ``call.timeout`` kills it too.
    """
    start = time.monotonic()
    tool = Path(call.argv[0]).name
    proc = _popen(call, subprocess.PIPE, subprocess.PIPE)
    err_tail: deque[str] = deque(maxlen=TAIL_LINES)
    killed: list[str] = []

    def pump_err() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            err_tail.append(redact(raw.decode("utf-8", "replace").rstrip("\n"), call.sensitive))

    def pump_in() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(call.input or b"")
        proc.stdin.close()

    def kill(why: str) -> None:
        killed.append(why)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    threads = [threading.Thread(target=pump_err, daemon=True)]
    if call.input is not None:
        threads.append(threading.Thread(target=pump_in, daemon=True))
    for t in threads:
        t.start()
    timer = threading.Timer(call.timeout, kill, ("timeout",)) if call.timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    assert proc.stdout is not None
    reader_error: BaseException | None = None
    try:
        yield proc.stdout
        while proc.stdout.read(STREAM_CHUNK):
            pass
    except Exception as e:
        reader_error = e
        try:
            proc.wait(timeout=_EXIT_GRACE)
        except subprocess.TimeoutExpired:
            kill("reader")
    except BaseException:
        kill("reader")
        raise
    finally:
        rc = proc.wait()
        if timer:
            timer.cancel()
        for t in threads:
            t.join(timeout=5)
        for s in (proc.stdout, proc.stderr, proc.stdin):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
    result = Result(call.argv, rc, "", "\n".join(err_tail), time.monotonic() - start)
    if "timeout" in killed:
        raise ToolError(
            f"{tool} timed out after {call.timeout:.0f}s: {describe(call)}",
            "raise the timeout or look at the last output above",
        ) from reader_error
    if rc != 0 and not killed and (call.check or reader_error is not None):
        raise failure(call, result) from reader_error
    if reader_error is not None:
        raise reader_error
