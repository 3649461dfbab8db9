"""A real PostgreSQL server for the tests: the one at BAKE_TEST_PG (scripts/test.sh starts
one), else one this session starts with Debian's `postgresql` binaries (initdb into a temp
folder owned by the `postgres` user, a unix socket only) and stops after."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake.infra import process
from bake.infra.process import Call


def _bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found or shutil.which("runuser") is None:
        pytest.fail("the PostgreSQL tests need Debian's postgresql package (scripts/setup.sh installs it)")
    return found[-1]


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A libpq URL of a running server: BAKE_TEST_PG's, or one started here."""
    given = os.environ.get("BAKE_TEST_PG")
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="bake-pg."))  # short: a socket path is at most 107 bytes
    shutil.chown(folder, "postgres", "postgres")
    as_postgres = ("runuser", "-u", "postgres", "--")
    bin_ = _bin()
    data = folder / "data"
    process.run(
        Call(
            argv=(
                *as_postgres,
                str(bin_ / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        )
    )
    options = f"-c listen_addresses='' -k {folder} -c fsync=off"
    start = ("-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o", options, "start")
    process.run(Call(argv=(*as_postgres, str(bin_ / "pg_ctl"), *start)))
    try:
        yield f"postgresql:///postgres?host={folder}&user=postgres"
    finally:
        process.run(
            Call(
                argv=(*as_postgres, str(bin_ / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"),
                check=False,
            )
        )
        shutil.rmtree(folder, ignore_errors=True)


def registry_url(server_url: str, images: str | None = None) -> str:
    """A fresh registry in the server (its own `repo`), images in ``images`` (oci://…)."""
    url = f"{server_url}&repo=t{uuid.uuid4().hex[:12]}"
    return f"{url}&images={images}" if images else url
