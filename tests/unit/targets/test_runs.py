"""A `bake build` killed outright (SIGKILL) is swept up by the next run: real processes, a
real journal and lock; the target's own part is played by a sweeper that records its call.
tests/integration/test_build.py kills a real bake (Packer, containers, key tags)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bake.targets import runs
from bake.targets.runs import DeadRun

# argv: state folder, Packer's folder. Starts a run, notes a bake, starts a process working
# in its work folder (as Packer would), half-writes a record, then waits to be killed.
DOOMED = """
import os, subprocess, sys, time
from pathlib import Path
from bake.infra.fsutil import temp_name
from bake.targets import runs
state, tmp = Path(sys.argv[1]), Path(sys.argv[2])
run = runs.new_run(state, {"PACKER_TMP_DIR": str(tmp)})
with runs.active(run):
    work = state / "work" / "web-docker-0123456789ab"
    run.note("web", "docker", "sha256:0123456789ab" + "0" * 52, work)
    (work / "template").mkdir(parents=True)
    run.tmp.mkdir(parents=True)
    (run.tmp / "packer-docker123").mkdir()
    template = str(work / "template" / "web.pkr.hcl")
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)", template]
    child = subprocess.Popen(sleeper, start_new_session=True, stdout=subprocess.DEVNULL)
    record = state / "records" / "web" / "docker" / ("0123456789ab" + "0" * 52 + ".json")
    record.parent.mkdir(parents=True)
    temp_name(record).write_bytes(b'{"schema": "bake.rec')
    print(run.id, child.pid, flush=True)
    time.sleep(300)
"""


class Recorder:
    def __init__(self) -> None:
        self.runs: list[DeadRun] = []

    def sweep(self, run: DeadRun) -> list[str]:
        self.runs.append(run)
        return [f"target leftovers of {run.id}"]


def killed_run(state: Path, tmp: Path) -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(runs.__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", DOOMED, str(state), str(tmp)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id, child = proc.stdout.readline().split()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return run_id, int(child)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_next_run_sweeps_what_a_killed_run_left(tmp_path: Path) -> None:
    state, tmp = tmp_path / "state", tmp_path / "packer-tmp"
    run_id, child = killed_run(state, tmp)
    work = state / "work" / "web-docker-0123456789ab"
    records = state / "records" / "web" / "docker"
    assert alive(child) and work.is_dir() and (tmp / run_id).is_dir() and list(records.glob(".tmp-*"))

    recorder = Recorder()
    with runs.active(runs.new_run(state, {"PACKER_TMP_DIR": str(tmp)}), [recorder]) as run:
        assert [r.id for r in recorder.runs] == [run_id]
        dead = recorder.runs[0]
        assert [(b.name, b.target, b.short_key) for b in dead.bakes] == [("web", "docker", "0123456789ab")]
        assert dead.packer_tmp == tmp / run_id
        deadline = time.monotonic() + 15
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)  # the process working in its folder (Packer) was stopped
        assert not work.exists() and not (tmp / run_id).exists()
        assert not list(records.glob(".tmp-*"))  # the half-written record
        assert sorted(p.name for p in (state / "runs").iterdir()) == [f"{run.id}.json", f"{run.id}.lock"]
    assert not list((state / "runs").iterdir())  # a run that ends leaves nothing


def test_a_live_run_is_not_swept_nor_its_work_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    work = state / "work" / "web-docker-0123456789ab"
    with runs.active(runs.new_run(state, {})) as live:
        live.note("web", "docker", "sha256:0123456789ab" + "0" * 52, work)
        work.mkdir(parents=True)
        recorder = Recorder()
        assert runs.sweep(state, [recorder]) == [] and recorder.runs == []
        assert work.is_dir()


def test_a_run_killed_before_its_journal_made_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "runs").mkdir(parents=True)
    (state / "runs" / "20240101T000000-1-abcdef.lock").touch()  # no journal: killed right away
    recorder = Recorder()
    runs.sweep(state, [recorder])
    assert [r.bakes for r in recorder.runs] == [()]
    assert not list((state / "runs").iterdir())
