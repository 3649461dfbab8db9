"""bake.targets.docker.evidence: an image's file manifest from one export of a created container."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import IO

import pytest

from bake.attest import filemanifest as fm
from bake.attest.digest import sha256_bytes
from bake.errors import BakeError
from bake.infra import process
from bake.infra.process import Call, Result
from bake.targets.docker.engine import Engine
from bake.targets.docker.evidence import collect_image_manifest
from tests.tars import member, pipe, tar_bytes

IMAGE = sha256_bytes(b"image")
ENGINE = Engine("unix:///test/docker.sock")
VOL = fm.volatile_set()


def hexsha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- collect_image_manifest: create, export, remove --------------------------------------


class FakeDocker:
    """A runner and a streamer that record calls and serve a tar for `docker export`."""

    def __init__(self, tar: bytes) -> None:
        self.tar = tar
        self.calls: list[tuple[str, ...]] = []

    def run(self, call: Call, on_line: process.LineSink | None = None) -> Result:
        self.calls.append(call.argv)
        out = "c0ffee\n" if call.argv[1] == "create" else ""
        return Result(call.argv, 0, out, "", 0.0)

    @contextlib.contextmanager
    def stream(self, call: Call) -> Iterator[IO[bytes]]:
        self.calls.append(call.argv)
        assert call.env == {"DOCKER_HOST": ENGINE.host}
        yield pipe(self.tar)


def test_collect_image_manifest_exports_a_created_container_and_removes_it() -> None:
    fake = FakeDocker(tar_bytes(member("srv/b", data=b"b"), member("srv/a", data=b"a"), member("tmp/x")))
    entries = collect_image_manifest(fake.run, ENGINE, "bake/web:1.4.0", ["/srv/b"], streamer=fake.stream)
    assert [e.path for e in entries] == ["/srv/a"]
    create, export, remove = fake.calls
    assert create[:2] == ("docker", "create") and create[-1] == "bake/web:1.4.0"
    assert "--network" in create and "--entrypoint" in create
    assert export == ("docker", "export", "--", "c0ffee")
    assert remove == ("docker", "rm", "-f", "-v", "--", "c0ffee")


def test_collect_image_manifest_removes_the_container_when_the_export_fails() -> None:
    fake = FakeDocker(b"garbage" * 200)
    with pytest.raises(BakeError):
        collect_image_manifest(fake.run, ENGINE, "bake/web:1.4.0", streamer=fake.stream)
    assert fake.calls[-1] == ("docker", "rm", "-f", "-v", "--", "c0ffee")
