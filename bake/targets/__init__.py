"""Targets: where a recipe's image goes (a container image, a VM disk, a cloud image).

A plug-in family like the registry backends: the :class:`~bake.targets.base.Target`
protocol plus this table. Add a target with its own module and one line here; nothing
outside its module asks which target it has. Entries are imported on first use, so a
command pays only for the targets it touches.
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from typing import TYPE_CHECKING, cast

from bake.errors import RecipeError

if TYPE_CHECKING:
    from bake.model import Model
    from bake.targets.base import Target

# name -> "module:class" (order: how targets are listed)
TARGETS: dict[str, str] = {
    "docker": "bake.targets.docker:Docker",
    "qemu": "bake.targets.qemu:Qemu",
    "amazon-ebs": "bake.targets.cloud:AmazonEbs",
    "googlecompute": "bake.targets.cloud:GoogleCompute",
}


@cache
def _load(spec: str) -> Target:
    module, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cast("Target", cls())


def names() -> tuple[str, ...]:
    return tuple(TARGETS)


def bakeable() -> tuple[str, ...]:
    return tuple(n for n in TARGETS if get(n).bakes)


def find(name: str) -> Target | None:
    spec = TARGETS.get(name)
    return _load(spec) if spec is not None else None


def get(name: str) -> Target:
    """The target called ``name``; a RecipeError with a did-you-mean when there is none."""
    found = find(name)
    if found is None:
        near = difflib.get_close_matches(name, list(TARGETS), n=1, cutoff=0.6)
        raise RecipeError(
            f"unknown target {name!r}",
            (f"did you mean {near[0]!r}? " if near else "") + f"targets: {', '.join(TARGETS)}",
        )
    return found


def config_of(name: str) -> type[Model] | None:
    """The config model of a target's `targets.NAME` block (None for an unknown name)."""
    found = find(name)
    return found.config if found is not None else None
