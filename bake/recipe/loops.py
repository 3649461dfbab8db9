"""Loops, `when` and handlers: which steps a recipe runs, and how often.

A looped step is rendered once per item, with the item as `item`; its `when` is evaluated
per item. Error locations of the expanded steps point back at the step as written.
Handlers are numbered after the steps; `notify` must name one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bake.recipe.models import Handler, Recipe, Step
from bake.recipe.render import Where, evaluate_list, evaluate_when, render_tree
from bake.recipe.source import Source

NO_ITEM = object()


def select(
    source: Source,
    recipe: Recipe,
    step_origin: Sequence[tuple[int, Any]],
    context: Mapping[str, Any],
    n_steps: int,
) -> tuple[list[tuple[int, Step]], list[Mapping[str, Any]], list[tuple[int, Handler]]]:
    """The steps whose `when` is true (each item of a loop with `item` bound, and its
    context), and the handlers whose `when` is true, numbered after the steps."""
    steps: list[tuple[int, Step]] = []
    contexts: list[Mapping[str, Any]] = []
    for j, step in enumerate(recipe.steps):
        i, item = step_origin[j]
        ctx = context if item is NO_ITEM else {**context, "item": item}
        if step.when is None or evaluate_when(step.when, ctx, Where(source, ("steps", i, "when"))):
            steps.append((i, step))
            contexts.append(ctx)
    _check_loops(source, steps)
    _check_notify(source, recipe, step_origin)
    handlers: list[tuple[int, Handler]] = []
    for k, handler in enumerate(recipe.handlers):
        if handler.when is None or evaluate_when(
            handler.when, context, Where(source, ("handlers", k, "when"))
        ):
            handlers.append((n_steps + k, handler))
    return steps, contexts, handlers


def expand_loops(
    steps: list[Any],
    looped: set[int],
    source: Source,
    context: Mapping[str, Any],
    env_context: Mapping[str, Any],
    origin: list[tuple[int, Any]],
) -> list[Any]:
    """A looped step becomes one step per item, each rendered with `item` bound (its
    `when` stays for later, as every step's does). ``origin`` gets (index, item) of each."""
    out: list[Any] = []
    for i, raw in enumerate(steps):
        if i not in looped:
            out.append(raw)
            origin.append((i, NO_ITEM))
            continue
        where = Where(source, ("steps", i, "loop"))
        spec = raw["loop"]
        if isinstance(spec, str):
            items = evaluate_list(spec, context, where)
        elif isinstance(spec, list):
            items = render_tree(spec, ("steps", i, "loop"), source, context, env_context, lambda _: False)
        else:
            raise where.error(
                f"`loop` is a list or an expression, got {type(spec).__name__}", "e.g. loop: [a, b]"
            )
        body = {k: v for k, v in raw.items() if k != "loop"}

        def keep_when(loc: tuple[str | int, ...], i: int = i) -> bool:
            return loc == ("steps", i, "when")

        for item in items:
            ctx = {**context, "item": item}
            env_ctx = {**env_context, "item": item}
            out.append(render_tree(body, ("steps", i), source, ctx, env_ctx, keep_when))
            origin.append((i, item))
    return out


def remap(origin: Sequence[tuple[int, Any]]) -> Callable[[tuple[str | int, ...]], tuple[str | int, ...]]:
    """Error locations of expanded steps point at the step as written."""

    def remap(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and loc[1] < len(origin):
            return ("steps", origin[loc[1]][0], *loc[2:])
        return loc

    return remap


def _check_loops(source: Source, steps: Sequence[tuple[int, Step]]) -> None:
    """What runs once per step cannot differ per item: its environment, and Ansible."""
    first: dict[int, Step] = {}
    for i, step in steps:
        if i not in first:
            first[i] = step
            continue
        if step.module == "ansible":
            raise source.error(("steps", i, "loop"), "an `ansible` step cannot loop", "loop inside the play")
        if step.env != first[i].env:
            raise source.error(
                ("steps", i, "env"),
                "`env` must be the same for every item of a loop",
                "it is the environment of the step's one script; use {{ item }} in the module instead",
            )


def _check_notify(source: Source, recipe: Recipe, origin: Sequence[tuple[int, Any]]) -> None:
    names = [h.name for h in recipe.handlers]
    for j, step in enumerate(recipe.steps):
        for name in step.notify:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
                hint = f"did you mean `{near[0]}`?" if near else None
                known = (
                    f"handlers: {', '.join(names)}" if names else "add it under `handlers:` with this name"
                )
                raise source.error(
                    ("steps", origin[j][0], "notify"),
                    f"no handler named `{name}`",
                    f"{hint} {known}" if hint else known,
                )
