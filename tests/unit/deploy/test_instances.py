"""bake.deploy.instances: instance URLs and the one ssh command."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import socketserver
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bake.attest import filemanifest as fm
from bake.attest.digest import sha256_bytes
from bake.deploy.instances import Instance, layer_changes, parse_changes, parse_instance, ssh_call
from bake.errors import BakeError, ToolError
from bake.targets.docker.api import EngineAPI
from bake.targets.docker.engine import Engine

IMAGE = sha256_bytes(b"image")
ENGINE = Engine("unix:///test/docker.sock")
VOL = fm.volatile_set()


def hexsha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- instances ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "instance"),
    [
        ("docker://web-1", Instance("docker", "web-1")),
        ("docker://root@web-1", Instance("docker", "web-1")),
        ("ssh://admin@host.example", Instance("ssh", "host.example", "admin")),
        ("ssh://admin@10.0.0.5:2222", Instance("ssh", "10.0.0.5", "admin", 2222)),
        ("ssh://[fd00::5]:22", Instance("ssh", "fd00::5", None, 22)),
    ],
)
def test_parse_instance(url: str, instance: Instance) -> None:
    assert parse_instance(url) == instance


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("web-1", "not an instance URL"),
        ("docker://", "not an instance URL"),
        ("docker://-H=tcp://evil", "not a container name"),
        ("docker://a/b", "not a container name"),
        ("ssh://admin:hunter2@host", "holds a password"),
        ("ssh://host:99999", "not an ssh URL"),
        ("ssh://host/path", "not an ssh URL"),
        ("http://host", "unknown scheme 'http'"),
    ],
)
def test_parse_instance_refuses(url: str, message: str) -> None:
    with pytest.raises(BakeError, match=message) as info:
        parse_instance(url)
    assert info.value.hint
    assert "hunter2" not in info.value.message


def test_ssh_call_is_one_non_interactive_command() -> None:
    inst = Instance("ssh", "10.0.0.5", "admin", 2222)
    call = ssh_call(inst, VOL, {"SSH_AUTH_SOCK": "/run/agent.sock", "SECRET": "x"})
    assert call.argv[:6] == ("ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20")
    assert call.argv[6:12] == ("-p", "2222", "-l", "admin", "--", "10.0.0.5")
    assert call.argv[12] == fm.find_command(VOL)
    assert call.env == {"SSH_AUTH_SOCK": "/run/agent.sock"}


# --- layer_changes: the Engine API over a unix socket (a small server plays the engine) ---


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _tar(*members: tuple[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.uid = len(data), 1001
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextlib.contextmanager
def fake_engine(
    tmp_path: Path, changes: object, files: dict[str, bytes]
) -> Iterator[tuple[Engine, list[str]]]:
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            asked.append(self.path)
            if url.path == "/containers/web-1/changes":
                body = json.dumps(changes).encode()
            elif url.path == "/containers/web-1/archive":
                path = parse_qs(url.query)["path"][0]
                if path not in files:
                    self.send_error(404)
                    return
                body = files[path]
            else:
                self.send_error(500, "unexpected")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    sock = tmp_path / "docker.sock"
    server = _Engine(str(sock), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Engine(f"unix://{sock}"), asked
    finally:
        server.shutdown()
        server.server_close()


def test_layer_changes_reads_each_changed_path_once(tmp_path: Path) -> None:
    changes = [
        {"Path": "/srv", "Kind": 0},
        {"Path": "/srv/index.html", "Kind": 0},
        {"Path": "/srv/gone", "Kind": 0},  # listed, then deleted before it was read
        {"Path": "/usr/share/doc/curl", "Kind": 2},
        {"Path": "/tmp/x", "Kind": 1},  # volatile: not read
    ]
    files = {
        "/srv": _tar(("srv", None), ("srv/index.html", b"<h1>hi</h1>")),
        "/srv/index.html": _tar(("index.html", b"<h1>defaced</h1>")),
    }
    with fake_engine(tmp_path, changes, files) as (engine, asked):
        got = layer_changes(engine, "web-1", VOL)
    assert got is not None
    by_path = {e.path: e for e in got.entries}
    assert by_path["/srv"].kind == "dir"  # a folder: its own header only
    assert by_path["/srv/index.html"].sha256 == hexsha(b"<h1>defaced</h1>")
    assert by_path["/srv/index.html"].uid == 1001
    assert got.deleted == ("/srv/gone", "/usr/share/doc/curl")
    assert not any("tmp" in a for a in asked)


@pytest.mark.parametrize(
    "changes",
    [
        [{"Path": "relative", "Kind": 0}],
        [{"Path": "/etc", "Kind": 7}],
        {"Path": "/etc"},
    ],
)
def test_layer_changes_it_cannot_read_fall_back_to_an_export(tmp_path: Path, changes: object) -> None:
    with fake_engine(tmp_path, changes, {}) as (engine, _):
        assert layer_changes(engine, "web-1", VOL) is None


def test_too_many_changes_fall_back_to_an_export(tmp_path: Path) -> None:
    changes = [{"Path": f"/srv/{i}", "Kind": 1} for i in range(5)]
    with fake_engine(tmp_path, changes, {}) as (engine, asked):
        assert layer_changes(engine, "web-1", VOL, limit=4) is None
    assert len(asked) == 1


def test_an_empty_layer_and_a_remote_engine() -> None:
    assert parse_changes(None) == []
    assert parse_changes([{"Path": "/a", "Kind": 1}, {"Path": "/b", "Kind": 2}]) == [("A", "/a"), ("D", "/b")]
    assert layer_changes(Engine("tcp://10.0.0.1:2376"), "web-1", VOL) is None


def test_an_engine_error_is_a_tool_error(tmp_path: Path) -> None:
    with fake_engine(tmp_path, [], {}) as (engine, _), pytest.raises(ToolError, match="500"):
        EngineAPI(engine.host.removeprefix("unix://")).json("/containers/other/changes")
