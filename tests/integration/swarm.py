"""A Docker engine in swarm mode of the tests' own, started and stopped by them.

A private dockerd (own socket, data root, exec root and pidfile under a temporary folder)
that leaves the host's networking as it found it: its default bridge and its swarm
gateway bridge under names and subnets of their own, no iptables rules, no IP forwarding
or masquerading changes. Not ``--bridge none``: a dockerd started so deletes the host's
``docker0``, the bridge of any other engine on the machine. The ingress routing mesh is
not used: tasks are reached by name over an attachable overlay network (``--endpoint-mode
dnsrr``), from client containers on that network.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bake.infra import process
from bake.infra.process import Call
from bake.targets.docker import engine as docker

NETWORK = "bake-test-net"
BRIDGE, BRIDGE_ADDRESS = "bake-swbr0", "10.230.0.1/24"  # its default bridge, made here
GATEWAY_BRIDGE = "bake-swarm0"  # the Linux bridge of docker_gwbridge (15 characters at most)
GATEWAY_SUBNET = "10.231.0.0/24"
ADDRESS_POOL = "10.232.0.0/16"  # overlay networks: inside their own network namespaces
OPTIONS = ("--bridge", BRIDGE, "--iptables=false", "--ip-masq=false", "--ip-forward=false")


@dataclass(frozen=True)
class LiveSwarm:
    engine: docker.Engine
    network: str

    def docker(self, *argv: str, check: bool = True, timeout: float = 300) -> process.Result:
        return process.run(self.engine.call(*argv, check=check, timeout=timeout))


def _teardown(swarm: LiveSwarm) -> None:
    """Everything the swarm made, so that the dockerd stops clean."""
    services = swarm.docker("service", "ls", "-q", check=False).stdout.split()
    if services:
        swarm.docker("service", "rm", *services, check=False)
    containers = swarm.docker("ps", "-aq", check=False).stdout.split()
    if containers:
        swarm.docker("rm", "-f", "-v", *containers, check=False)
    swarm.docker("swarm", "leave", "--force", check=False)
    swarm.docker("network", "rm", "docker_gwbridge", check=False)


def _links() -> set[str]:
    out = process.run(Call(argv=("ip", "-o", "link", "show"))).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _ip(*argv: str, check: bool = True) -> None:
    process.run(Call(argv=("ip", *argv), check=check))


@contextlib.contextmanager
def _own_bridge() -> Iterator[None]:
    """The dockerd's default bridge: a Linux bridge of its own name, removed after."""
    before = _links()
    if BRIDGE in before:  # left by a run that was killed
        _ip("link", "del", BRIDGE)
    _ip("link", "add", "name", BRIDGE, "type", "bridge")
    try:
        _ip("addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        yield
    finally:
        _ip("link", "del", BRIDGE, check=False)
        # the other engine's default bridge (its user networks may come and go meanwhile)
        assert "docker0" not in before or "docker0" in _links(), "the host lost docker0"


@contextlib.contextmanager
def live_swarm() -> Iterator[LiveSwarm]:
    # a short path: unix socket paths under the exec root must stay under 108 bytes
    folder = Path(tempfile.mkdtemp(prefix="bake-swarm-", dir="/tmp"))
    try:
        with _own_bridge(), docker.private_dockerd(process.run, folder, options=OPTIONS) as engine:
            swarm = LiveSwarm(engine, NETWORK)
            try:
                swarm.docker(
                    "network",
                    "create",
                    "--driver",
                    "bridge",
                    "--subnet",
                    GATEWAY_SUBNET,
                    "-o",
                    f"com.docker.network.bridge.name={GATEWAY_BRIDGE}",
                    "-o",
                    "com.docker.network.bridge.enable_icc=false",
                    "-o",
                    "com.docker.network.bridge.enable_ip_masquerade=false",
                    "docker_gwbridge",
                )
                swarm.docker(
                    "swarm", "init", "--advertise-addr", "127.0.0.1", "--default-addr-pool", ADDRESS_POOL
                )
                swarm.docker("network", "create", "--driver", "overlay", "--attachable", NETWORK)
                yield swarm
            finally:
                _teardown(swarm)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
