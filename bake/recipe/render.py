"""Jinja2 over recipe values: vars resolution, `when`, and the secret guard.

Everything renders in an immutable sandbox with StrictUndefined: an undefined variable is
an error that names the variable and the field it is used in. Vars may refer to other vars
(resolved lazily, in dependency order; a cycle is an error).

Secrets never get a value here. In a step's ``env:`` a secret renders to an opaque marker
that the compiler turns into a sensitive Packer variable; anywhere else, touching a secret
is an error, so a secret can never end up in a rendered file, script or log line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bake.errors import RecipeError
from bake.recipe.source import Loc, Source, format_loc

SECRET_MARK = "\x00bake-secret:"  # noqa: S105 - a marker, not a password
SECRET_END = "\x00"  # noqa: S105 - a marker, not a password
RESERVED = frozenset({"target", "recipe"})
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0", "", "none"})


class SecretUsed(Exception):
    """Raised inside Jinja when a secret is rendered outside a step's env."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class SecretGuard:
    name: str

    def __str__(self) -> str:
        raise SecretUsed(self.name)

    def __html__(self) -> str:  # pragma: no cover - autoescape is off
        raise SecretUsed(self.name)


def secret_marker(name: str) -> str:
    return f"{SECRET_MARK}{name}{SECRET_END}"


def make_env() -> jinja2.Environment:
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


_ENV = make_env()


@dataclass(frozen=True)
class Where:
    """Where a string came from, for error messages."""

    source: Source
    loc: Loc
    at_key: bool = False

    def error(self, message: str, hint: str | None = None) -> RecipeError:
        return self.source.error(self.loc, message, hint, at_key=self.at_key)


def render_string(text: str, context: Mapping[str, Any], where: Where, env: jinja2.Environment = _ENV) -> str:
    if "{" not in text:
        return text  # fast path: no Jinja syntax at all
    try:
        return env.from_string(text).render(context)
    except SecretUsed as exc:
        if "ansible" in where.loc:
            raise where.error(
                f"secret `{exc.name}` may not be rendered here",
                f"a play gets every secret of the recipe as an extra var of its name: use "
                f"{{{{ {exc.name} }}}} in the play (with no_log: true on the tasks that do)",
            ) from None
        raise where.error(
            f"secret `{exc.name}` may not be rendered here",
            "a secret may appear only in a step's `env:` (it reaches the build as a sensitive "
            'Packer variable, never a file or a log); use `env: {NAME: "{{ '
            f'{exc.name} }}}}"}}` and refer to $NAME in the step',
        ) from None
    except jinja2.UndefinedError as exc:
        raise _undefined(exc, context, where) from None
    except jinja2.TemplateSyntaxError as exc:
        raise where.error(f"Jinja2 syntax error: {exc.message}", "check the {{ }} and {% %} pairs") from None
    except jinja2.TemplateError as exc:
        raise where.error(f"Jinja2 error: {exc}") from None


def _undefined(exc: jinja2.UndefinedError, context: Mapping[str, Any], where: Where) -> RecipeError:
    message = str(exc.message or exc)
    name = message.split("'")[1] if message.count("'") >= 2 else ""
    near = difflib.get_close_matches(name, [str(k) for k in context], n=1, cutoff=0.6)
    hint = f"did you mean `{near[0]}`?" if near else "define it under `vars:`, in a -f file, or with -e"
    return where.error(f"undefined variable `{name}`" if name else message, hint)


def evaluate_when(text: str, context: Mapping[str, Any], where: Where) -> bool:
    """Ansible-style `when`: either "{{ expr }}" or a bare expression."""
    rendered = render_string(text if "{{" in text else "{{ " + text + " }}", context, where)
    word = rendered.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise where.error(
        f"`when` must be true or false, got {rendered!r}",
        "write a comparison, e.g. target != 'docker'",
    )


def evaluate_list(text: str, context: Mapping[str, Any], where: Where) -> list[Any]:
    """A `loop:` given as an expression ("{{ users }}" or `users`): the list it names."""
    expr = text.strip()
    if expr.startswith("{{") and expr.endswith("}}"):
        expr = expr[2:-2].strip()
    try:
        value = _ENV.compile_expression(expr, undefined_to_none=False)(**context)
        if isinstance(value, jinja2.Undefined):
            str(value)  # raises the UndefinedError that names the variable
    except jinja2.UndefinedError as exc:
        raise _undefined(exc, context, where) from None
    except jinja2.TemplateSyntaxError as exc:
        raise where.error(
            f"Jinja2 syntax error: {exc.message}", "write a list, or the name of a list var"
        ) from None
    if not isinstance(value, list | tuple):
        raise where.error(
            f"`loop` must give a list, got {type(value).__name__} {value!r}",
            'write a YAML list, or name a var that holds one: loop: "{{ users }}"',
        )
    for item in value:
        if isinstance(item, SecretGuard):
            raise where.error(
                f"secret `{item.name}` may not be looped over", "a secret may appear only in `env:`"
            )
    return list(value)


def resolve_vars(
    raw: Mapping[str, Any], where_of: Callable[[str], Where], base: Mapping[str, Any]
) -> dict[str, Any]:
    """Resolve vars that refer to each other, in dependency order; refuse cycles."""
    resolved: dict[str, Any] = {}

    def resolve(name: str, stack: tuple[str, ...]) -> Any:
        if name in resolved:
            return resolved[name]
        if name in stack:
            chain = " → ".join((*stack[stack.index(name) :], name))
            raise where_of(name).error(f"variables refer to each other in a cycle: {chain}")
        value = raw[name]
        refs = _references(value, where_of(name))
        deps = {r: resolve(r, (*stack, name)) for r in sorted(refs) if r in raw}
        context = {**base, **resolved, **deps}
        out = _render_value(value, context, where_of(name))
        resolved[name] = out
        return out

    for name in raw:
        resolve(name, ())
    return resolved


def _references(value: Any, where: Where) -> set[str]:
    if isinstance(value, str):
        if "{" not in value:
            return set()
        try:
            return set(jinja2.meta.find_undeclared_variables(_ENV.parse(value)))
        except jinja2.TemplateSyntaxError as exc:
            raise where.error(f"Jinja2 syntax error: {exc.message}") from None
    if isinstance(value, list):
        return set().union(*(_references(v, where) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_references(v, where) for v in value.values())) if value else set()
    return set()


def _render_value(value: Any, context: Mapping[str, Any], where: Where) -> Any:
    if isinstance(value, str):
        return render_string(value, context, where)
    if isinstance(value, list):
        return [_render_value(v, context, where) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, context, where) for k, v in value.items()}
    return value


def render_tree(
    value: Any,
    loc: Loc,
    source: Source,
    context: Mapping[str, Any],
    env_context: Mapping[str, Any],
    skip: Callable[[Loc], bool],
) -> Any:
    """Render every string of a raw recipe tree; strings under a step's env get secrets."""
    if skip(loc):
        return value
    if isinstance(value, str):
        in_env = len(loc) == 4 and loc[0] == "steps" and loc[2] == "env"
        return render_string(value, env_context if in_env else context, Where(source, loc))
    if isinstance(value, list):
        return [render_tree(v, (*loc, i), source, context, env_context, skip) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: render_tree(v, (*loc, k), source, context, env_context, skip) for k, v in value.items()}
    return value


def where_text(where: Where) -> str:
    pos = where.source.where(where.loc)
    return f"{where.source.path}:{pos.line}:{pos.col}: {format_loc(where.loc)}"
