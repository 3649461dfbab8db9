"""The Docker engine: find one that answers, or start a private dockerd; image helpers.

Order: DOCKER_HOST if it answers; the default socket if it answers; else, as root with
dockerd installed, a private dockerd under the state folder (own socket, data root, exec
root and pidfile) that is stopped when the bake ends; else a clear error. All docker calls
go through the process gateway with the engine's DOCKER_HOST passed explicitly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bake.errors import ToolError
from bake.infra.process import Call, Runner, spawn

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Engine:
    host: str
    private: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # on every container bake creates (its run's id)

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def label_args(self) -> tuple[str, ...]:
        return tuple(arg for k, v in self.labels for arg in ("--label", f"{k}={v}"))

    def call(self, *argv: str, check: bool = True, timeout: float | None = None) -> Call:
        return Call(argv=("docker", *argv), env=self.env, check=check, timeout=timeout)


def answers(runner: Runner, host: str) -> bool:
    try:
        result = runner(
            Call(
                argv=("docker", "version", "--format", "{{.Server.Version}}"),
                env={"DOCKER_HOST": host},
                check=False,
                timeout=15,
            )
        )
    except ToolError:
        return False
    return result.returncode == 0


@contextlib.contextmanager
def engine(runner: Runner, state: Path, environ: Mapping[str, str] | None = None) -> Iterator[Engine]:
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST")
    if host and answers(runner, host):
        yield Engine(host)
        return
    if not host and answers(runner, DEFAULT_SOCKET):
        yield Engine(DEFAULT_SOCKET)
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise ToolError(
            "no Docker engine answers" + (f" at DOCKER_HOST={host}" if host else ""),
            "start Docker (or set DOCKER_HOST); as root with docker.io installed bake starts "
            "a private dockerd itself",
        )
    with private_dockerd(runner, state / "dockerd") as started:
        yield started


@contextlib.contextmanager
def private_dockerd(
    runner: Runner, folder: Path, timeout: float = 60.0, options: tuple[str, ...] = ()
) -> Iterator[Engine]:
    """A dockerd of our own under ``folder``, stopped when the block ends; ``options`` are
    more dockerd flags (e.g. to keep its networking off the host's)."""
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "docker.sock"
    host = f"unix://{sock}"
    if answers(runner, host):  # one we started earlier and did not stop (or a sibling's)
        yield Engine(host, private=True)
        return
    argv = (
        "dockerd",
        "-H",
        host,
        "--data-root",
        str(folder / "data"),
        "--exec-root",
        str(folder / "exec"),
        "--pidfile",
        str(folder / "docker.pid"),
        *options,
    )
    proc = spawn(Call(argv=argv), folder / "dockerd.log")
    try:
        deadline = time.monotonic() + timeout
        while not answers(runner, host):
            if not proc.alive() or time.monotonic() > deadline:
                tail = proc.log.read_text(errors="replace").splitlines()[-15:]
                raise ToolError(
                    "the private dockerd did not start:\n" + "\n".join("  | " + t for t in tail),
                    f"see {proc.log}",
                )
            time.sleep(0.3)
        yield Engine(host, private=True)
    finally:
        proc.stop()


# --- images and containers ---------------------------------------------------------------


def inspect_image(runner: Runner, eng: Engine, ref: str) -> dict[str, Any] | None:
    result = runner(eng.call("image", "inspect", "--", ref, check=False))
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout)
    return data[0] if data else None


def image_id(runner: Runner, eng: Engine, ref: str) -> str | None:
    info = inspect_image(runner, eng, ref)
    return str(info["Id"]) if info else None


def tag(runner: Runner, eng: Engine, source: str, target: str) -> None:
    runner(eng.call("tag", "--", source, target))


def run_detached(
    runner: Runner,
    eng: Engine,
    image: str,
    name: str,
    *,
    entrypoint: str | None = None,
    args: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> str:
    argv = ["run", "-d", "--name", name, *eng.label_args()]
    for k, v in sorted((labels or {}).items()):
        argv += ["--label", f"{k}={v}"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    argv += ["--", image, *args]
    return runner(eng.call(*argv)).stdout.strip()


def remove_container(runner: Runner, eng: Engine, ref: str, attempts: int = 5) -> None:
    """Remove a container, retrying: right after a container exits, the daemon can still be
    tearing it down and refuse (`removal already in progress`, `device or resource busy`)."""
    for attempt in range(attempts):
        result = runner(eng.call("rm", "-f", "-v", "--", ref, check=False))
        if result.returncode == 0 or "No such container" in result.stderr + result.stdout:
            return
        time.sleep(0.5 * (attempt + 1))


def containers(runner: Runner, eng: Engine, label: str | None = None, all_: bool = True) -> list[str]:
    argv = ["ps", "-q", "--no-trunc"]
    if all_:
        argv.append("-a")
    if label:
        argv += ["--filter", f"label={label}"]
    return runner(eng.call(*argv)).stdout.split()


def containers_of_run(runner: Runner, eng: Engine, label: str, tmp: Path) -> list[str]:
    """The containers a run made: labelled with its id, or mounting its Packer folder
    (Packer's build container, which bake cannot label)."""
    found = set(containers(runner, eng, label))
    every = containers(runner, eng)
    if every:
        fmt = "{{.Id}}{{range .Mounts}} {{.Source}}{{end}}"
        out = runner(eng.call("inspect", "--format", fmt, "--", *every, check=False)).stdout
        for row in out.splitlines():
            cid, *sources = row.split(" ")
            if any(s == str(tmp) or s.startswith(f"{tmp}/") for s in sources):
                found.add(cid)
    return sorted(found)


def container_state(runner: Runner, eng: Engine, ref: str) -> dict[str, Any]:
    out = runner(eng.call("inspect", "--format", "{{json .State}}", "--", ref)).stdout
    state: dict[str, Any] = json.loads(out)
    return state
