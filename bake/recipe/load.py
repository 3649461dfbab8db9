"""Load a recipe, its `extends` chain, vars and referenced files into a resolved recipe.

Order of vars (later wins): built-ins (`target`, `recipe`) < ancestors' vars (root first)
< this recipe's vars < var files (`-f`, in order) < `-e key=value`. A parent is baked with
its own vars; `-f`/`-e` apply to the recipe named on the command line.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bake import targets
from bake.errors import RecipeError
from bake.recipe.errors import describe
from bake.recipe.inputs import FileInput, file_inputs
from bake.recipe.loops import expand_loops, remap, select
from bake.recipe.models import Check, Handler, Recipe, Step
from bake.recipe.render import (
    RESERVED,
    SecretGuard,
    Where,
    evaluate_when,
    render_tree,
    resolve_vars,
    secret_marker,
)
from bake.recipe.source import Source, load_yaml

SKIP_RENDER = frozenset({("vars",), ("secrets",), ("extends",), ("name",), ("version",)})


@dataclass(frozen=True)
class Resolved:
    """One recipe resolved for one target: everything the compiler and the bake key need."""

    recipe: Recipe
    target: str
    path: Path
    vars: Mapping[str, Any]
    steps: tuple[tuple[int, Step], ...]  # (index in the recipe, step) after `when`; a looped
    # step appears once per item, each with the same index
    files: tuple[FileInput, ...]
    verify: tuple[Check, ...]  # the checks that apply, inherited ones first
    parent: Resolved | None
    chain: tuple[str, ...] = field(default=())  # names, this recipe first
    skipped: tuple[tuple[Check, str], ...] = ()  # checks whose `when:` is false here, and why
    handlers: tuple[tuple[int, Handler], ...] = ()  # numbered after the steps, after `when`

    @property
    def name(self) -> str:
        return self.recipe.name


@dataclass(frozen=True)
class _Doc:
    path: Path
    source: Source
    name: str
    extends: str | None


def load_doc(path: Path) -> _Doc:
    source = load_yaml(path)
    data = source.data
    if not isinstance(data, dict):
        raise source.error((), "a recipe is a YAML mapping", "start from `bake init NAME`")
    name = data.get("name")
    extends = data.get("extends")
    if not isinstance(name, str):
        raise source.error(("name",), "required string field is missing or not a string", "add `name: NAME`")
    if extends is not None and not isinstance(extends, str):
        raise source.error(("extends",), "expected the name of a parent recipe")
    for key in ("vars",):
        if key in data and not isinstance(data[key], dict):
            raise source.error((key,), "expected a mapping of variable names to values")
    return _Doc(path=path, source=source, name=name, extends=extends)


def find_parent(name: str, child: Path, search_path: Sequence[Path], source: Source | None = None) -> Path:
    folders = [child.parent, *search_path]
    for folder in folders:
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean `{near[0]}`?" if near else f"looked in: {', '.join(map(str, folders))}"
    if source is not None:
        raise source.error(("extends",), f"parent recipe `{name}` not found", hint)
    raise RecipeError(f"{child}: extends: parent recipe `{name}` not found", hint)


def load_chain(path: Path, search_path: Sequence[Path] = ()) -> list[_Doc]:
    """This recipe first, then its parent, up to the base. A cycle is an error."""
    docs: list[_Doc] = []
    seen: dict[Path, str] = {}
    current: Path | None = path.resolve()
    while current is not None:
        if current in seen:
            names = [d.name for d in docs] + [seen[current]]
            raise docs[-1].source.error(
                ("extends",),
                f"`extends` forms a cycle: {' → '.join(names)}",
                "a base recipe has `base:` instead of `extends:`",
            )
        doc = load_doc(current)
        seen[current] = doc.name
        docs.append(doc)
        current = find_parent(doc.extends, current, search_path, doc.source) if doc.extends else None
    return docs


def parse_extra_vars(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise RecipeError(f"-e {pair}: expected key=value", "for example: -e listen_port=8080")
        out[key] = value
    return out


def load_var_files(paths: Sequence[Path]) -> tuple[dict[str, Any], dict[str, Source]]:
    merged: dict[str, Any] = {}
    origin: dict[str, Source] = {}
    for p in paths:
        source = load_yaml(p)
        if not isinstance(source.data, dict):
            raise source.error((), "a var file is a YAML mapping of names to values")
        for k, v in source.data.items():
            merged[k] = v
            origin[k] = source
    return merged, origin


def resolve(
    path: Path,
    target: str,
    *,
    var_files: Sequence[Path] = (),
    extra_vars: Mapping[str, str] | None = None,
    search_path: Sequence[Path] = (),
) -> Resolved:
    chain = load_chain(path, search_path)
    return _resolve_chain(chain, target, var_files, dict(extra_vars or {}), search_path)


def resolve_targets(
    path: Path,
    *,
    var_files: Sequence[Path] = (),
    extra_vars: Mapping[str, str] | None = None,
    search_path: Sequence[Path] = (),
) -> dict[str, Resolved]:
    """The recipe resolved for each target it declares (or inherits)."""
    chain = load_chain(path, search_path)
    targets = declared_targets(chain)
    return {t: _resolve_chain(chain, t, var_files, dict(extra_vars or {}), search_path) for t in targets}


def declared_targets(chain: Sequence[_Doc]) -> tuple[str, ...]:
    known = targets.names()
    names: set[str] = set()
    for doc in chain:
        declared = doc.source.data.get("targets") or {}
        if isinstance(declared, dict):
            names.update(k for k in declared if k in known)
    return tuple(t for t in known if t in names) or ("docker",)


def _resolve_chain(
    chain: Sequence[_Doc],
    target: str,
    var_files: Sequence[Path],
    extra_vars: dict[str, str],
    search_path: Sequence[Path],
) -> Resolved:
    doc = chain[0]
    parent = _resolve_chain(chain[1:], target, (), {}, search_path) if len(chain) > 1 else None
    if target not in declared_targets(chain):
        raise doc.source.error(
            ("targets",),
            f"target `{target}` is not declared by this recipe or its parents",
            f"declared: {', '.join(declared_targets(chain))}; add `targets: {{{target}: {{}}}}`",
        )
    data: dict[str, Any] = dict(doc.source.data)
    data["targets"] = _merged_targets(chain)

    # vars: ancestors first, then this recipe, then var files, then -e
    raw_vars: dict[str, Any] = {}
    origin: dict[str, Where] = {}
    for d in reversed(chain):
        for k, v in (d.source.data.get("vars") or {}).items():
            raw_vars[k] = v
            origin[k] = Where(d.source, ("vars", k))
    file_vars, file_origin = load_var_files(var_files)
    for k, v in file_vars.items():
        raw_vars[k] = v
        origin[k] = Where(file_origin[k], (k,))
    for k, v in extra_vars.items():
        raw_vars[k] = v
        origin[k] = Where(doc.source, ("vars", k))
    for k in raw_vars:
        if k in RESERVED:
            w = origin[k]
            raise Where(w.source, w.loc, at_key=True).error(
                f"`{k}` is a reserved variable name", "pick another name"
            )

    secrets = data.get("secrets") or []
    secret_names = [s["name"] for s in secrets if isinstance(s, dict) and isinstance(s.get("name"), str)]
    builtins: dict[str, Any] = {
        "target": target,
        "recipe": {"name": doc.name, "version": str(data.get("version", ""))},
    }
    guards = {n: SecretGuard(n) for n in secret_names}
    resolved_vars = resolve_vars(raw_vars, lambda n: origin[n], {**builtins, **guards})
    context = {**resolved_vars, **builtins, **guards}
    env_context = {**context, **{n: secret_marker(n) for n in secret_names}}

    raw_steps: list[Any] = data["steps"] if isinstance(data.get("steps"), list) else []
    looped = {i for i, st in enumerate(raw_steps) if isinstance(st, dict) and "loop" in st}

    def skip(loc: tuple[str | int, ...]) -> bool:
        if loc in SKIP_RENDER:
            return True
        if len(loc) == 3 and loc[0] in ("steps", "verify", "handlers") and loc[2] == "when":
            return True
        return len(loc) == 2 and loc[0] == "steps" and loc[1] in looped  # rendered per item below

    rendered = render_tree(data, (), doc.source, context, env_context, skip)
    step_origin: list[tuple[int, Any]] = []  # per step of the validated recipe: (index, item)
    if isinstance(rendered.get("steps"), list):
        rendered["steps"] = expand_loops(
            rendered["steps"], looped, doc.source, context, env_context, step_origin
        )
    try:
        recipe = Recipe.model_validate(rendered)
    except ValidationError as exc:
        raise describe(exc, doc.source, Recipe, remap=remap(step_origin)) from None

    steps, contexts, handlers = select(doc.source, recipe, step_origin, context, len(raw_steps))
    files = tuple(
        file_inputs(doc.path, doc.source, steps, contexts)
        + file_inputs(doc.path, doc.source, handlers, [context] * len(handlers))
    )
    checks: list[Check] = []
    skipped: list[tuple[Check, str]] = []
    for i, check in enumerate(recipe.verify):
        if check.when is None or evaluate_when(check.when, context, Where(doc.source, ("verify", i, "when"))):
            checks.append(check)
        else:
            skipped.append((check, f"when: {check.when} is false for target {target}"))
    verify = (*(parent.verify if parent else ()), *checks)
    return Resolved(
        recipe=recipe,
        target=target,
        path=doc.path,
        vars=resolved_vars,
        steps=tuple(steps),
        files=files,
        verify=verify,
        parent=parent,
        chain=tuple(d.name for d in chain),
        skipped=(*(parent.skipped if parent else ()), *skipped),
        handlers=tuple(handlers),
    )


def _merged_targets(chain: Sequence[_Doc]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for d in reversed(chain):
        targets = d.source.data.get("targets")
        if not isinstance(targets, dict):
            continue
        for name, conf in targets.items():
            if isinstance(conf, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **conf}
            else:
                merged[name] = conf if conf is not None else {}
    return merged or {"docker": {}}
