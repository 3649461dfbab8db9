"""`targets.qemu` in a recipe: the disk and the machine that builds and verifies it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from bake.model import Model
from bake.recipe.models import NonEmpty


class QemuConfig(Model):
    disk_size: Annotated[str, StringConstraints(pattern=r"^\d+[MG]$")] = "4G"
    memory: Annotated[int, Field(ge=256)] = 1024
    cpus: Annotated[int, Field(ge=1)] = 1
    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    ssh_username: NonEmpty = "root"
    boot_wait: str = "5s"
