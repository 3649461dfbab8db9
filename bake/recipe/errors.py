"""Turn pydantic validation errors into `FILE:LINE:COL: field.path: message` lines."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from bake.errors import RecipeError
from bake.recipe.source import Loc, Source, format_loc

_PATTERN_HINTS = {
    "version": "use semantic versioning, e.g. 1.4.0 (quote it in YAML)",
    "name": "use lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
    "extends": "name the parent recipe: the file NAME.yaml beside this one",
    "image": "pin the base by digest: REF@sha256:<64 hex digits>; a tag alone is refused",
    "mode": 'an octal file mode as a quoted string, e.g. "0644"',
    "dest": "an absolute path inside the image, e.g. /etc/app.conf",
    "path": "an absolute path inside the image, e.g. /etc/app.conf",
}


def describe(
    exc: ValidationError,
    source: Source,
    model: type[BaseModel],
    remap: Callable[[Loc], Loc] | None = None,
) -> RecipeError:
    """All validation errors of a document, one line each, as one RecipeError. ``remap``
    maps a location in the validated data back to the document as written."""
    lines: list[str] = []
    hints: list[str] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        loc = remap(loc) if remap else loc
        message, hint = _message(err, loc, model)
        pos = source.where(loc, at_key=err["type"] == "extra_forbidden")
        lines.append(f"{source.path}:{pos.line}:{pos.col}: {format_loc(loc)}: {message}")
        if hint and hint not in hints:
            hints.append(hint)
    return RecipeError("\n".join(lines), "\n".join(hints) or None)


def _clean_loc(loc: Sequence[Any]) -> Loc:
    # pydantic adds validator names for function validators and tagged unions; drop them.
    return tuple(p for p in loc if isinstance(p, int) or not str(p).startswith("function-"))


def _message(err: Any, loc: Loc, model: type[BaseModel]) -> tuple[str, str | None]:
    kind = err["type"]
    value = err.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean `{near[0]}`?" if near else None
        if allowed:
            hint = (hint + " " if hint else "") + f"allowed keys: {', '.join(allowed)}"
        return f"unknown key `{loc[-1]}`", hint
    if kind == "missing":
        return "required field is missing", f"add `{field}:`"
    if kind == "string_type":
        return (
            f"expected a string, got {type(value).__name__} {value!r}",
            'quote the value in YAML, e.g. "1.0.0"',
        )
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a valid {field}", _PATTERN_HINTS.get(field)
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, "), None
    return str(err["msg"]), None


def allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys a mapping at ``loc`` (relative to ``model``) accepts. Under `targets:` the
    target plug-ins say: their names, then each one's config model."""
    current: Any = model
    if loc[:1] == ("targets",):
        from bake import targets

        if len(loc) == 1:
            return list(targets.names())
        config = targets.config_of(str(loc[1]))
        if config is None:
            return []
        current, loc = config, loc[2:]
    for part in loc:
        if isinstance(part, int):
            current = _element_type(current)
            continue
        cls = _model_of(current)
        if cls is None:
            return []
        field = next((f for n, f in cls.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = field.annotation
    cls = _model_of(current)
    if cls is None:
        return []
    return [f.alias or n for n, f in cls.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _element_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _element_type(arg)
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return annotation
