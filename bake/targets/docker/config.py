"""`targets.docker` in a recipe: how the image is run (what `docker commit` records)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bake.model import Model
from bake.recipe.models import AbsPath, VarName


class DockerConfig(Model):
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: dict[VarName, str] = Field(default_factory=dict)
    expose: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    workdir: AbsPath | None = None
