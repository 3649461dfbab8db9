"""Live instances for `bake drift`: where the one stream of a running system comes from.

- ``docker://CONTAINER``: when the container runs the very image the manifest describes
  (its image id is the signed one), only its writable layer can differ: the image's
  layers are content-addressed, their files are the manifest's. The engine lists what
  the layer changed (``docker diff``) and each changed path is read from the engine's
  archive of it, as ``docker cp`` reads it (a folder's own header is enough), over the
  engine's socket. Else, with ``full``, or past CHANGES_LIMIT changed paths, ``docker
  export`` streams the whole filesystem as a tar. Either way nothing runs inside the
  container, so a tampered instance cannot lie about itself.
- ``ssh://USER@HOST[:PORT]``: one ``ssh`` running GNU ``find -printf`` with ``-exec
  sha256sum -z {} +`` (:func:`bake.attest.filemanifest.find_command`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bake.attest.filemanifest import (
    TIMEOUT,
    Entry,
    Streamer,
    find_command,
    find_entries,
    is_volatile,
    tar_entries,
)
from bake.errors import BakeError
from bake.infra import process
from bake.infra.process import Call
from bake.targets.docker.api import EngineAPI, container_path, local_api
from bake.targets.docker.engine import Engine

_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # Docker's own rule for names (and ids)


@dataclass(frozen=True)
class Instance:
    """A parsed ``docker://CONTAINER`` or ``ssh://[USER@]HOST[:PORT]``."""

    scheme: Literal["docker", "ssh"]
    host: str  # the container for docker://
    user: str | None = None
    port: int | None = None


def parse_instance(url: str) -> Instance:
    """Parse a drift target; raise BakeError saying what is wrong and what would do."""
    usage = "give docker://CONTAINER or ssh://USER@HOST[:PORT]"
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise BakeError(f"not an instance URL: {url!r}", hint=usage)
    if scheme == "docker":
        # testinfra writes docker://USER@CONTAINER; the user does not matter to an export.
        container = rest.rpartition("@")[2].rstrip("/")
        if not _CONTAINER.fullmatch(container):  # also keeps "-…" from reading as an option
            raise BakeError(f"not a container name or id in {url!r}", hint=usage)
        return Instance("docker", container)
    if scheme == "ssh":
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise BakeError(f"not an ssh URL: {url!r} ({e})", hint=usage) from e
        if parts.password is not None:
            # Not echoed: the message would spread the password further.
            raise BakeError("the ssh URL holds a password", hint="use an ssh key or agent instead")
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BakeError(f"not an ssh URL: {url!r}", hint=usage)
        return Instance("ssh", parts.hostname, parts.username or None, port)
    raise BakeError(f"cannot check drift of {url!r}: unknown scheme {scheme!r}", hint=usage)


def export_call(engine: Engine, container: str) -> Call:
    return engine.call("export", "--", container, timeout=TIMEOUT)


# Past this many changed paths one export stream is cheaper than a request per path (each
# costs the engine ~60 ms: it tars the path in a helper process; measured on 2 cores).
CHANGES_LIMIT = 24
_WORKERS = 4
_KINDS = {0: "C", 1: "A", 2: "D"}  # the Engine API's change kinds


@dataclass(frozen=True)
class LayerChanges:
    """What a container's writable layer holds: paths added or changed there (read back
    as entries) and paths deleted (a deleted folder takes what was below it)."""

    entries: tuple[Entry, ...]
    deleted: tuple[str, ...]


def parse_changes(raw: object) -> list[tuple[str, str]] | None:
    """The Engine API's changes ([{"Path": …, "Kind": 0|1|2}] or null) as (A|C|D, path);
    None when it does not read as that (the caller then streams an export instead)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        return None
    out: list[tuple[str, str]] = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        kind, path = _KINDS.get(item.get("Kind", -1)), item.get("Path")
        if kind is None or not isinstance(path, str) or not path.startswith("/"):
            return None
        out.append((kind, path))
    return out


def layer_changes(
    engine: Engine, container: str, volatile: frozenset[str], *, limit: int = CHANGES_LIMIT
) -> LayerChanges | None:
    """The container's writable layer, read path by path over the engine's socket; None
    when an export is the better (or the only) way: no local socket, too many changes,
    or an answer that does not parse."""
    api = local_api(engine)
    if api is None:
        return None
    changes = parse_changes(api.json(container_path(container, "changes")))
    if changes is None:
        return None
    changes = [(k, p) for k, p in changes if p != "/" and not is_volatile(p, volatile)]
    wanted = [p for k, p in changes if k != "D"]
    if len(wanted) > limit:
        return None
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        found = list(pool.map(lambda p: _entry_of(api, container, p), wanted))
    # a path deleted between the listing and its read counts as deleted
    deleted = [p for k, p in changes if k == "D"] + [
        p for p, e in zip(wanted, found, strict=True) if e is None
    ]
    return LayerChanges(tuple(e for e in found if e is not None), tuple(sorted(deleted)))


def _entry_of(api: EngineAPI, container: str, path: str) -> Entry | None:
    """One path of a container as an entry, from the engine's archive of it (what `docker
    cp` reads): its first member is the path itself, hashed when a file; of a folder only
    that header is read and the connection is closed."""
    with api.get(container_path(container, "archive"), {"path": path}) as body:
        if body is None:
            return None
        for e in tar_entries(body):
            return Entry(path, e.kind, e.mode, e.uid, e.gid, e.sha256, e.target)
    return None


def ssh_call(
    instance: Instance, volatile: frozenset[str], environ: Mapping[str, str], ssh_config: Path | None = None
) -> Call:
    """One ssh command, non-interactive (no password or host-key prompt can hang it);
    `ssh_config`: an ssh_config file to use instead of the user's (`ssh -F`)."""
    argv = ["ssh", *(("-F", str(ssh_config)) if ssh_config else ()), "-T", "-o", "BatchMode=yes"]
    argv += ["-o", "ConnectTimeout=20"]
    if instance.port is not None:
        argv += ["-p", str(instance.port)]
    if instance.user:
        argv += ["-l", instance.user]
    argv += ["--", instance.host, find_command(volatile)]
    # The gateway's environment is allow-listed; ssh needs the agent socket, if any.
    env = {k: environ[k] for k in ("SSH_AUTH_SOCK",) if k in environ}
    return Call(argv=tuple(argv), env=env, timeout=TIMEOUT)


@contextmanager
def live_entries(
    engine: Engine | None,
    instance: Instance,
    volatile: frozenset[str],
    *,
    streamer: Streamer = process.stream,
    environ: Mapping[str, str] | None = None,
    ssh_config: Path | None = None,
) -> Iterator[Iterator[Entry]]:
    """The entries of a running instance, read while the block runs (the one stream)."""
    if instance.scheme == "docker":
        if engine is None:
            raise BakeError("checking a docker:// instance needs a Docker engine")
        with streamer(export_call(engine, instance.host)) as out:
            yield tar_entries(out, volatile)
    else:
        call = ssh_call(instance, volatile, os.environ if environ is None else environ, ssh_config)
        with streamer(call) as out:
            yield find_entries(out)


def testinfra_host(url: str) -> str:
    """The testinfra backend URL of an instance URL."""
    instance = parse_instance(url)
    if instance.scheme == "docker":
        return f"bake-docker://root@{instance.host}"  # one shell for every command (run.SHELL_BACKEND)
    return url
