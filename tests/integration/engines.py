"""Fresh, empty Docker engines, as on new CI runners: one dockerd each, with its own data
root, socket and bridge, beside the machine's own engine.

Each engine gets a bridge of its own (created here, deleted after) and manages no iptables
rules, so it never touches the machine engine's `docker0` bridge or chains (`--bridge=none`
would: dockerd deletes `docker0` when started so). Containers on these bridges reach each
other but not the internet: recipes baked in them must not need the network (bootstrapping
with mmdebstrap runs on the host and does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bake.infra import process
from bake.infra.process import Call, Spawned
from bake.targets.docker import engine as docker


def _ip(*args: str, check: bool = True) -> None:
    process.run(Call(argv=("ip", *args), check=check))


def _free_subnet() -> int:
    taken = process.run(Call(argv=("ip", "-br", "addr"))).stdout
    for third in range(10, 250):
        if f"10.214.{third}." not in taken:
            return third
    raise RuntimeError("no free 10.214.x.0/24 subnet for a test engine")


@contextlib.contextmanager
def fresh_engines(count: int) -> Iterator[list[docker.Engine]]:
    """``count`` empty engines, stopped and removed after (their images with them)."""
    base = Path(tempfile.mkdtemp(prefix="bake-eng."))  # short: unix socket paths are limited
    started: list[tuple[str, Spawned, Path]] = []
    try:
        for i in range(count):
            bridge = f"bk{os.getpid() % 100000}x{i}"
            third = _free_subnet()
            _ip("link", "add", "name", bridge, "type", "bridge")
            _ip("addr", "add", f"10.214.{third}.1/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            folder = base / str(i)
            folder.mkdir()
            host = f"unix://{folder}/d.sock"
            argv = (
                "dockerd", "-H", host, "--data-root", str(folder / "data"), "--exec-root", str(folder / "x"),
                "--pidfile", str(folder / "d.pid"), "--bridge", bridge, "--iptables=false", "--ip-masq=false",
            )  # fmt: skip
            spawned = process.spawn(Call(argv=argv), folder / "dockerd.log")
            started.append((bridge, spawned, folder))
            deadline = time.monotonic() + 60
            while not docker.answers(process.run, host):
                if not spawned.alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"a test dockerd did not start: {(folder / 'dockerd.log').read_text()[-2000:]}"
                    )
                time.sleep(0.3)
        yield [docker.Engine(f"unix://{folder}/d.sock") for _, _, folder in started]
    finally:
        for bridge, spawned, _folder in started:
            spawned.stop(timeout=30)
            _ip("link", "del", bridge, check=False)
        shutil.rmtree(base, ignore_errors=True)
