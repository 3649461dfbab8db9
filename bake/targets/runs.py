"""Runs of `bake build`, so that one killed outright (SIGKILL, a lost CI runner) is swept
up by the next.

A run has an id and a journal in the state folder (``runs/ID.json``) that says, before
Packer starts, which bakes it works on: their work folders and bake keys. It holds
``runs/ID.lock`` (flock) while it lives; the kernel drops that lock when the process
dies, however it dies. What a run makes carries its id where it can: Packer's temporary
folder is ``PACKER_TMP_DIR/ID`` (Packer's build container mounts it), and the containers
bake starts are labelled ``io.bake.run=ID``.

The next run sweeps every run whose lock it can take: processes still working in its work
folders (Packer gets SIGINT first, to remove its own build container and VM), its work
folders, Packer's temporary folder, build records half-written by its process, and what
its target made (:class:`SweepsRuns`: the docker target removes the run's containers and
the key tags of bakes that were not recorded good). A work folder a live run also names is
left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from bake.infra.fsutil import TMP_PREFIX, atomic_write

RUNS = "runs"
RUN_LABEL = "io.bake.run"
_GRACE = 10.0  # seconds a dead run's Packer gets to clean up after SIGINT


@dataclass(frozen=True)
class Bake:
    """One bake a run works on."""

    name: str
    target: str
    key: str  # the bake key
    work: str  # its work folder

    @property
    def short_key(self) -> str:
        return self.key.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class DeadRun:
    """What a killed run's journal says it was working on."""

    id: str
    pid: int
    state: Path
    packer_tmp: Path
    bakes: tuple[Bake, ...] = ()
    live_work: frozenset[str] = field(default_factory=frozenset)  # work folders live runs use


@runtime_checkable
class SweepsRuns(Protocol):
    """A target session that can remove what a dead run made with its target (containers,
    tags …); the generic parts (processes, folders, records) are swept here."""

    def sweep(self, run: DeadRun) -> list[str]:
        """Remove what ``run`` made; say what, for people."""
        ...


class Run:
    """A run: its id, Packer's temporary folder, and the bakes it noted in its journal."""

    def __init__(self, state: Path, run_id: str, tmp: Path) -> None:
        self.state, self.id, self.tmp = state, run_id, tmp
        self.folder = state / RUNS
        self.bakes: list[Bake] = []
        self._lock = threading.Lock()  # `bake build --all -j N` bakes in threads

    def note(self, name: str, target: str, key: str, work: Path) -> None:
        """Record a bake before anything is made for it (the journal is rewritten
        atomically: a kill leaves the old or the new one)."""
        bake = Bake(name, target, key, str(work))
        with self._lock:
            if bake not in self.bakes:
                self.bakes.append(bake)
                self._write()

    def _write(self) -> None:
        doc = {
            "id": self.id,
            "pid": os.getpid(),
            "packer_tmp": str(self.tmp),
            "bakes": [b.__dict__ for b in self.bakes],
        }
        atomic_write(self.folder / f"{self.id}.json", json.dumps(doc, sort_keys=True).encode())


def new_run(state: Path, environ: Mapping[str, str]) -> Run:
    """A run of this process (nothing is written before :func:`active`)."""
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{os.urandom(3).hex()}"
    base = Path(environ.get("PACKER_TMP_DIR") or state / "packer-tmp")
    return Run(state, run_id, base / run_id)


@contextlib.contextmanager
def active(run: Run, sweepers: Sequence[object] = ()) -> Iterator[Run]:
    """Take the run's lock and journal, sweep the dead runs of its state folder (with the
    target sessions in ``sweepers`` for what their targets made), and live until the block
    ends; then the run leaves nothing (its Packer folder included)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    lock = run.folder / f"{run.id}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run._write()
        sweep(run.state, sweepers)
        yield run
    finally:
        shutil.rmtree(run.tmp, ignore_errors=True)
        lock.with_suffix(".json").unlink(missing_ok=True)
        lock.unlink(missing_ok=True)
        os.close(fd)


def sweep(state: Path, sweepers: Sequence[object] = ()) -> list[str]:
    """Sweep every dead run of ``state``; returns what was removed, for people."""
    folder = state / RUNS
    if not folder.is_dir():
        return []
    dead: dict[Path, int] = {}
    live_work: set[str] = set()
    for lock in sorted(folder.glob("*.lock")):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            dead[lock] = fd
        except BlockingIOError:
            os.close(fd)
            live_work |= {b.work for b in _journal(state, lock.with_suffix(".json")).bakes}
    done: list[str] = []
    for lock, fd in dead.items():
        try:
            run = _journal(state, lock.with_suffix(".json"), frozenset(live_work))
            done += _sweep_one(run, sweepers)
            lock.with_suffix(".json").unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return done


def _journal(state: Path, path: Path, live_work: frozenset[str] = frozenset()) -> DeadRun:
    """A run's journal; a run killed before it wrote one made nothing (no bakes)."""
    try:
        doc = json.loads(path.read_text())
        bakes = tuple(Bake(**{k: str(b[k]) for k in ("name", "target", "key", "work")}) for b in doc["bakes"])
        return DeadRun(str(doc["id"]), int(doc["pid"]), state, Path(doc["packer_tmp"]), bakes, live_work)
    except (OSError, ValueError, KeyError, TypeError):
        return DeadRun(path.stem, 0, state, state / "packer-tmp" / path.stem, (), live_work)


def _sweep_one(run: DeadRun, sweepers: Sequence[object]) -> list[str]:
    done: list[str] = []
    works = [Path(b.work) for b in run.bakes if b.work not in run.live_work]
    done += [f"process {pid}" for pid in _stop_processes([*map(str, works), str(run.packer_tmp)])]
    for sweeper in sweepers:
        if isinstance(sweeper, SweepsRuns):
            done += sweeper.sweep(run)
    for path in [*works, run.packer_tmp]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            done.append(str(path))
    for records in {run.state / "records" / b.name / b.target for b in run.bakes if run.pid}:
        for tmp in records.glob(f"{TMP_PREFIX}*-{run.pid}-*"):  # fsutil.temp_name: NAME-PID-RANDOM
            tmp.unlink(missing_ok=True)
            done.append(str(tmp))
    return done


def _stop_processes(paths: Sequence[str]) -> list[int]:
    """Processes whose command line names one of ``paths`` (a dead run's Packer, its VMs):
    SIGINT (Packer cleans up after itself), then SIGKILL for what is left after a grace."""
    found = [pid for pid, argv in _processes() if any(p in arg for arg in argv for p in paths)]
    alive = [pid for pid in found if _signal(pid, signal.SIGINT)]
    deadline = time.monotonic() + _GRACE
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _signal(pid, 0)]
    for pid in alive:  # with what it started, when it leads a process group (as the gateway starts tools)
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        _signal(pid, signal.SIGKILL)
    return found


def _processes() -> Iterator[tuple[int, list[str]]]:
    me = os.getpid()
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError):
            yield int(entry.name), (entry / "cmdline").read_bytes().decode("utf-8", "replace").split("\0")


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig``; False when the process is gone (or not ours to signal)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
