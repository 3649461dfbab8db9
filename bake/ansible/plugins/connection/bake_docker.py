"""An Ansible connection into a Docker container: `docker exec` and `docker cp`.

ansible-core has no Docker connection (it lives in the community.docker collection, which
comes only with the whole `ansible` bundle), and bake needs only this: run a command in
the build container Packer started (by its ID), and copy files in and out. Commands go
through bake's one process gateway, with the engine at DOCKER_HOST. Pipelining is on, so
module arguments (and the secrets in them) travel on stdin and are never written to a
file in the image.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection import ConnectionBase

from bake.infra.process import Call, run

DOCUMENTATION = """
name: bake_docker
short_description: run tasks in a Docker container with docker exec (bake's build container)
description:
  - Runs commands with C(docker exec) and copies files with C(docker cp), in the engine at DOCKER_HOST.
author: bake
options:
  remote_addr:
    description: The container's ID or name.
    default: inventory_hostname
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
  remote_user:
    description: The user commands run as in the container (default the image's user).
    type: str
    vars:
      - name: ansible_user
extends_documentation_fragment:
  - connection_pipelining
"""


class Connection(ConnectionBase):  # type: ignore[misc]  # ansible-core is untyped
    transport = "bake_docker"
    has_pipelining = True

    def _container(self) -> str:
        return str(self.get_option("remote_addr"))

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        user = self.get_option("remote_user")
        argv = ["docker", "exec", *(["-i"] if in_data is not None else [])]
        argv += ["-u", str(user)] if user else []
        argv += [self._container(), "/bin/sh", "-c", cmd]
        result = run(Call(argv=tuple(argv), input=in_data, check=False))
        return result.returncode, result.stdout.encode(), result.stderr.encode()

    def _copy(self, src: str, dest: str) -> None:
        result = run(Call(argv=("docker", "cp", src, dest), check=False))
        if result.returncode != 0:
            raise AnsibleConnectionFailure(f"docker cp {src} {dest} failed: {result.stderr.strip()}")

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        self._copy(in_path, f"{self._container()}:{out_path}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        self._copy(f"{self._container()}:{in_path}", out_path)

    def close(self) -> None:
        self._connected = False

    def reset(self, *args: Any) -> None:
        self.close()
