"""Load a recipe, its `extends` chain, vars and referenced files into a resolved recipe.

Order of vars (later wins): built-ins (`target`, `recipe`) < ancestors' vars (root first)
< this recipe's vars < var files (`-f`, in order) < `-e key=value`. A parent is baked with
its own vars; `-f`/`-e` apply to the recipe named on the command line.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bake import targets
from bake.errors import RecipeError
from bake.recipe.errors import describe
from bake.recipe.models import Check, Handler, Recipe, Step
from bake.recipe.paths import inside, read_small
from bake.recipe.render import (
    RESERVED,
    SecretGuard,
    Where,
    evaluate_list,
    evaluate_when,
    render_string,
    render_tree,
    resolve_vars,
    secret_marker,
)
from bake.recipe.source import Source, load_yaml

SKIP_RENDER = frozenset({("vars",), ("secrets",), ("extends",), ("name",), ("version",)})


@dataclass(frozen=True)
class FileInput:
    """A file a step ships into the image or runs from the host: copied bytes, a template
    rendered on the host, an archive, a key, or one file of an Ansible play's folders."""

    step: int
    src: str  # relative to the recipe's folder
    content: bytes
    digest: str
    item: int = 0  # which item of a looped step

    @property
    def input_name(self) -> str:
        """Its name among the bake key's inputs."""
        return f"file:{self.src}" + (f"#{self.item}" if self.item else "")


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


def find_parent(name: str, child: Path, search_path: Sequence[Path]) -> Path:
    folders = [child.parent, *search_path]
    for folder in folders:
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean `{near[0]}`?" if near else f"looked in: {', '.join(map(str, folders))}"
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
        current = find_parent(doc.extends, current, search_path) if doc.extends else None
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
        rendered["steps"] = _expand_loops(
            rendered["steps"], looped, doc.source, context, env_context, step_origin
        )
    try:
        recipe = Recipe.model_validate(rendered)
    except ValidationError as exc:
        raise describe(exc, doc.source, Recipe, remap=_remap(step_origin)) from None

    steps, contexts, handlers = _select(doc.source, recipe, step_origin, context, len(raw_steps))
    files = tuple(_file_inputs(doc, steps, contexts) + _file_inputs(doc, handlers, [context] * len(handlers)))
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


_NO_ITEM = object()


def _select(
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
        ctx = context if item is _NO_ITEM else {**context, "item": item}
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


def _expand_loops(
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
            origin.append((i, _NO_ITEM))
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


def _remap(origin: Sequence[tuple[int, Any]]) -> Callable[[tuple[str | int, ...]], tuple[str | int, ...]]:
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


def _file_inputs(
    doc: _Doc, steps: Sequence[tuple[int, Step]], contexts: Sequence[Mapping[str, Any]]
) -> list[FileInput]:
    out: list[FileInput] = []
    folder = doc.path.parent
    seen: dict[int, int] = {}
    for (i, step), context in zip(steps, contexts, strict=True):
        item = seen[i] = seen.get(i, -1) + 1
        group = "handlers" if isinstance(step, Handler) else "steps"
        n = i - (len(doc.source.data.get("steps") or []) if group == "handlers" else 0)
        module = step.module
        if module == "ansible":
            assert step.ansible is not None
            out += _play_inputs(doc, i, (group, n), step)
            continue
        src = _shipped_src(step)
        if src is None:
            continue
        field_name = "key" if module == "apt_repository" else "src"
        where = Where(doc.source, (group, n, module, field_name))
        path = inside(folder, src, where)
        if module == "template":
            text = read_small(path, where).decode("utf-8", errors="strict")
            content = render_string(text, context, Where(_file_source(path), ())).encode()
        else:
            content = _read_bytes(path, where)
        out.append(FileInput(i, src, content, "sha256:" + hashlib.sha256(content).hexdigest(), item))
    return out


def _shipped_src(step: Step) -> str | None:
    """The file from the recipe's folder that a step ships into the image, if any."""
    if step.copy_ is not None:
        return step.copy_.src
    if step.template is not None:
        return step.template.src
    if step.unarchive is not None and not step.unarchive.remote_src:
        return step.unarchive.src
    if step.apt_repository is not None:
        return step.apt_repository.key
    return None


MAX_PLAY_FILES = 2000
MAX_PLAY_BYTES = 32 << 20


def _play_inputs(doc: _Doc, index: int, at: tuple[str, int], step: Step) -> list[FileInput]:
    """Every file of the playbook's folder and of each `roles_path` folder: all a play
    and its roles can read. The play runs from a copy of exactly these files."""
    assert step.ansible is not None
    folder = doc.path.parent.resolve()
    where = Where(doc.source, (*at, "ansible", "playbook"))
    playbook = inside(folder, step.ansible.playbook, where)
    if playbook.parent == folder:
        raise where.error(
            "the playbook must be in a folder of its own (all of that folder is part of the bake key)",
            f"move it and what it reads into a folder beside the recipe, e.g. ansible/{playbook.name}",
        )
    roots = [(playbook.parent, where)]
    for k, rel in enumerate(step.ansible.roles_path):
        w = Where(doc.source, (*at, "ansible", "roles_path", k))
        roots.append((_inside_dir(folder, rel, w), w))
    found: dict[str, Path] = {}
    for root, w in roots:
        for path in sorted(_walk(root, folder, w)):
            found.setdefault(path.relative_to(folder).as_posix(), path)
    if len(found) > MAX_PLAY_FILES:
        raise where.error(
            f"the play's folders hold {len(found)} files, over the limit of {MAX_PLAY_FILES}",
            "keep the playbook and its roles in folders of their own",
        )
    out: list[FileInput] = []
    total = 0
    for rel, path in sorted(found.items()):
        content = _read_bytes(path, Where(doc.source, (*at, "ansible")))
        total += len(content)
        if total > MAX_PLAY_BYTES:
            raise where.error(
                f"the play's folders hold over {MAX_PLAY_BYTES >> 20} MiB", "keep large files out of them"
            )
        out.append(FileInput(index, rel, content, "sha256:" + hashlib.sha256(content).hexdigest()))
    return out


def _inside_dir(folder: Path, rel: str, where: Where) -> Path:
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise where.error(f"path {rel!r} leaves the recipe's folder", "give a folder beside the recipe")
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder):
        raise where.error(f"path {rel!r} resolves outside the recipe's folder to {path}")
    if not path.is_dir():
        raise where.error(f"folder {rel!r} not found in {folder}", "check the path and its spelling")
    return path


def _walk(root: Path, folder: Path, where: Where) -> list[Path]:
    """Files under ``root`` (hidden names and caches left out); a symlink must stay inside
    the recipe's folder, and a symlinked folder is refused."""
    out: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "__pycache__" or entry.name.endswith(".retry"):
            continue
        if entry.is_symlink():
            target = entry.resolve()
            if not target.is_relative_to(folder):
                raise where.error(
                    f"{entry.relative_to(folder)} links outside the recipe's folder to {target}",
                    "copy the file into the play's folder instead of linking to it",
                )
            if target.is_dir():
                raise where.error(f"{entry.relative_to(folder)} is a symlinked folder", "copy it instead")
        if entry.is_dir():
            out += _walk(entry, folder, where)
        elif entry.is_file():
            out.append(entry)
    return out


def _file_source(path: Path) -> Source:
    return Source(path=path, data=None, positions={})


def _read_bytes(path: Path, where: Where) -> bytes:
    try:
        return read_small(path, where)
    except OSError as exc:
        raise where.error(f"cannot read {path}: {exc.strerror}") from None
