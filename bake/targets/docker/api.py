"""A few read-only calls of the Docker Engine API over its unix socket.

Drift reads a container's writable layer path by path: through the API each path costs a
request on a local socket, not a `docker` process. Only unix:// engines are spoken to this
way; for any other (a tcp:// engine, maybe with TLS) :func:`local_api` gives None and the
caller keeps to the `docker` command.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator, Mapping
from typing import IO, Any
from urllib.parse import quote, urlencode

from bake.errors import ToolError
from bake.targets.docker.engine import Engine

TIMEOUT = 120.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class EngineAPI:
    """GET requests to one engine's socket; one connection per request (they are cheap on
    a local socket, and requests may run in threads)."""

    def __init__(self, socket_path: str, timeout: float = TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    @contextlib.contextmanager
    def get(self, endpoint: str, query: Mapping[str, str] | None = None) -> Iterator[IO[bytes] | None]:
        """The response body of GET *endpoint*, or None when the engine answers 404."""
        url = endpoint + ("?" + urlencode(query) if query else "")
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                conn.request("GET", url)
                resp = conn.getresponse()
            except OSError as e:
                raise ToolError(
                    f"the Docker engine at unix://{self.socket_path} did not answer GET {endpoint}: {e}"
                ) from e
            if resp.status == 404:
                yield None
                return
            if resp.status >= 300:
                why = _message(resp.read(4096))
                raise ToolError(f"the Docker engine answered GET {endpoint} with {resp.status}: {why}")
            yield resp
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        with self.get(path) as body:
            if body is None:
                raise ToolError(f"the Docker engine has no {path}")
            return json.loads(body.read())


def container_path(container: str, what: str) -> str:
    return f"/containers/{quote(container, safe='')}/{what}"


def local_api(engine: Engine) -> EngineAPI | None:
    """The API of *engine* when it listens on a unix socket, else None."""
    scheme, sep, rest = engine.host.partition("://")
    if scheme != "unix" or not sep or not rest.startswith("/"):
        return None
    return EngineAPI(rest)


def _message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:200]
    return str(doc.get("message", doc))[:200] if isinstance(doc, dict) else str(doc)[:200]
