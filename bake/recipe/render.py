"""Jinja2 over recipe values: vars resolution, `when`, and the secret guard.

Everything renders in an immutable sandbox with StrictUndefined: an undefined variable is
an error that names the variable and the field it is used in. Vars may refer to other vars
(resolved lazily, in dependency order; a cycle is an error).

Secrets never get a value here. In a step's ``env:`` a secret renders to an opaque marker
that the compiler turns into a sensitive Packer variable; anywhere else, touching a secret
is an error, so a secret can never end up in a rendered file, script or log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
import jinja2.runtime
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

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


MAX_TEXT = 1 << 20  # what a value may grow to, like a recipe file
MAX_NUMBER = 1 << 20  # an integer argument of a call or filter: a width, a count
MAX_POWER_BITS = 4096
MAX_LOOPS = 1_000_000  # range() items one string may iterate over
RENDER_SECONDS = 5.0  # how long a string with {% statements %} may take to render
_loops: contextvars.ContextVar[list[int]] = contextvars.ContextVar("bake_loops")


class TooLong(Exception):
    """A recipe string took longer to render than RENDER_SECONDS."""


class RecipeSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded: recipes are shared code, and `bake validate`
    may run on someone else's. No value grows over MAX_TEXT (``'a' * 10**9``,
    ``x|center(10**9)``), no power over MAX_POWER_BITS, range() yields at most MAX_LOOPS
    items per string, and a string with statements renders for at most RENDER_SECONDS."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded(f) for name, f in self.filters.items()}
        self.globals["range"] = _counted_range

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        big = operator == "**" and _ints(left, right) and right > 0 and abs(left) > 1
        if big and right * abs(left).bit_length() > MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is too large a number for a recipe")
        if operator == "*":
            size = max(_size(left) * _number(right), _size(right) * _number(left))
            if size > MAX_TEXT:
                raise SecurityError(f"a value of {size} items is over the limit of {MAX_TEXT}")
        return super().call_binop(context, operator, left, right)

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_numbers(args, kwargs)
        return super().call(context, obj, *args, **kwargs)


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _number(value: Any) -> int:
    return value if _ints(value) else 0


def _check_numbers(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if _ints(value) and abs(value) > MAX_NUMBER:
            raise SecurityError(f"{value} is too large an argument in a recipe (at most {MAX_NUMBER})")


def _bounded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps Jinja2's pass_context/pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_numbers(args, kwargs)
        return fn(*args, **kwargs)

    return bounded


class _CountedRange(Sequence[int]):
    """range() for recipes: every item iterated over is counted against MAX_LOOPS."""

    def __init__(self, items: range) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    def __iter__(self) -> Iterator[int]:
        budget = _loops.get(None)
        for item in self.items:
            if budget is not None:
                budget[0] -= 1
                if budget[0] < 0:
                    raise SecurityError(f"loops of over {MAX_LOOPS} iterations in one recipe value")
            yield item


def _counted_range(*args: int) -> _CountedRange:
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise SecurityError(f"range() of over {MAX_RANGE} items in a recipe")
    return _CountedRange(items)


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """TooLong after ``seconds`` (a timer signal: the main thread only, and only when no
    other timer runs)."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0]:
        yield
        return

    def expired(_signum: int, _frame: object) -> None:
        raise TooLong

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_env() -> jinja2.Environment:
    return RecipeSandbox(
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
    token = _loops.set([MAX_LOOPS])
    try:
        with _deadline(RENDER_SECONDS) if "{%" in text else contextlib.nullcontext():
            out = env.from_string(text).render(context)
        if len(out) > MAX_TEXT:
            raise where.error(f"renders to {len(out)} characters, over the limit of {MAX_TEXT}")
        return out
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
    except TooLong:
        raise where.error(f"took over {RENDER_SECONDS:.0f} seconds to render", "loops too long?") from None
    except RecipeError:
        raise
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError, MemoryError) as exc:
        # what an expression can raise by itself: 1/0, [][1], 'a' + 1, int('x') …
        raise where.error(f"Jinja2 error: {type(exc).__name__}: {exc}") from None
    finally:
        _loops.reset(token)


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
        except RecursionError:
            raise where.error("Jinja2 syntax error: nested too deeply") from None
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
