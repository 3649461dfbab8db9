"""Live instances for `bake drift`: where the one stream of a running system comes from.

- ``docker://CONTAINER``: ``docker export`` streams the container's filesystem as a tar.
  Nothing runs inside the container, so a tampered instance cannot lie about itself.
- ``ssh://USER@HOST[:PORT]``: one ``ssh`` running GNU ``find -printf`` with ``-exec
  sha256sum -z {} +`` (:func:`bake.attest.filemanifest.find_command`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bake.attest.filemanifest import TIMEOUT, Entry, Streamer, find_command, find_entries, tar_entries
from bake.errors import BakeError
from bake.infra import process
from bake.infra.process import Call
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
        return f"docker://root@{instance.host}"
    return url
