"""An Ansible playbook → a bake recipe (pure: data in, data out).

Tasks whose module maps one-to-one onto a bake module become steps (copy, template,
apt/package, user, group, service/systemd, lineinfile, blockinfile, file, get_url,
unarchive, sysctl, cron, shell/command), with their `loop`, `when`, `notify` and name.
What does not map stays Ansible: each run of such tasks, in order, becomes a playbook run
by an `ansible:` step, so the recipe does what the playbook did. Every task gets a line in
the report: mapped to what, kept in Ansible and why, or dropped and why.

A task maps only when every variable it uses is a play var (or `item` in a loop): facts
and registered results exist only while Ansible runs, and so do Ansible's own filters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta

from bake.recipe.ansible_modules import Dropped, Unmappable, convert_module
from bake.recipe.render import make_env

_ENV = make_env()
ALLOWED = frozenset({"item", "target", "recipe"})
TASK_LISTS = ("pre_tasks", "tasks", "post_tasks")
KNOWN_KEYS = frozenset(
    {"name", "loop", "with_items", "when", "notify", "tags", "become", "become_user", "args", "no_log"}
)
DROPPED_MODULES = {
    "debug": "prints while Ansible runs and changes nothing in the image",
    "ping": "checks the connection and changes nothing in the image",
    "meta": "steers Ansible's run; a recipe runs its steps in order",
}


@dataclass(frozen=True)
class Line:
    """One task's fate, for the report."""

    task: str
    outcome: str  # mapped | ansible | dropped
    detail: str  # the bake module, or why not


@dataclass
class Imported:
    """The recipe as data, the playbooks kept for Ansible, the files to copy, the report."""

    recipe: dict[str, Any]
    playbooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name → plays
    files: dict[str, str] = field(default_factory=dict)  # source (playbook-relative) → dest in recipe
    report: list[Line] = field(default_factory=list)


def short(module: str) -> str:
    for prefix in ("ansible.builtin.", "ansible.legacy.", "ansible.posix.", "community.general."):
        if module.startswith(prefix):
            return module[len(prefix) :]
    return module


def task_module(task: Mapping[str, Any]) -> tuple[str, Any]:
    """The module key of a task and its arguments (free-form `k=v` text parsed)."""
    modules = [k for k in task if k not in KNOWN_KEYS and not k.startswith(("with_", "loop_"))]
    ansible_only = [k for k in modules if k in _TASK_ONLY]
    if ansible_only:
        raise Unmappable(f"uses `{ansible_only[0]}`, which only Ansible has")
    if len(modules) != 1:
        raise Unmappable(f"uses {', '.join(f'`{m}`' for m in modules) or 'no module'}")
    name = modules[0]
    args = task[name]
    extra = task.get("args") or {}
    if isinstance(args, str) and short(name) not in ("shell", "command"):
        args = _free_form(args)
    if isinstance(args, dict) and isinstance(extra, dict):
        args = {**extra, **args}
    elif extra and isinstance(args, str):
        args = {"_raw": args, **extra}
    return short(name), args


_TASK_ONLY = frozenset(
    {
        "register",
        "changed_when",
        "failed_when",
        "ignore_errors",
        "delegate_to",
        "run_once",
        "environment",
        "block",
        "rescue",
        "always",
        "until",
        "retries",
        "delay",
        "loop_control",
        "vars",
        "check_mode",
        "any_errors_fatal",
        "listen",
        "include_tasks",
        "import_tasks",
        "include_role",
        "import_role",
    }
)


_KV = re.compile(r"""(\w+)=((?:\{\{.*?\}\}|"[^"]*"|'[^']*'|[^\s{"']+|\{)+)""")


def _free_form(text: str) -> dict[str, Any]:
    """`path={{ dir }} state=directory mode=0755`: key=value pairs, Jinja2 kept whole."""
    out: dict[str, Any] = {}
    rest = text
    for m in _KV.finditer(text):
        value = m.group(2)
        if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[m.group(1)] = value
        rest = rest.replace(m.group(0), "", 1)
    if rest.strip():
        raise Unmappable(f"free-form arguments `{text}`")
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def check_names(value: Any, known: frozenset[str], *, expression: bool = False) -> None:
    """Every Jinja2 name used is a play var; every filter and test is plain Jinja2's."""
    for text in _strings(value):
        source = "{{ " + text + " }}" if expression and "{{" not in text else text
        if "{" not in source:
            continue
        try:
            parsed = _ENV.parse(source)
            _ENV.from_string(source)  # unknown filters and tests are errors here
        except jinja2.TemplateError as exc:
            raise Unmappable(f"uses Jinja2 that only Ansible has ({exc.message or exc})") from None
        unknown = sorted(jinja2.meta.find_undeclared_variables(parsed) - known)
        if unknown:
            raise Unmappable(
                f"uses {', '.join(f'`{u}`' for u in unknown)}, not a play var "
                "(facts and registered results exist only while Ansible runs)"
            )


def convert_task(
    task: Mapping[str, Any],
    known: frozenset[str],
    handlers: Mapping[str, str],
    files: dict[str, str],
    templates: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One task → one step (raises Unmappable or Dropped). ``handlers``: handler name →
    mapped | dropped | ansible; ``templates``: the playbook's templates by path, whose
    names must be play vars too (bake renders them with the recipe's vars)."""
    module, args = task_module(task)
    if module in DROPPED_MODULES:
        raise Dropped(f"`{module}` {DROPPED_MODULES[module]}")
    loop = task.get("loop", task.get("with_items"))
    names = known | ({"item"} if loop is not None else frozenset())
    check_names(args, names)
    check_names(task.get("name") or "", names)
    when = task.get("when")
    if when is not None:
        check_names(when, names, expression=True)
    if loop is not None:
        check_names(loop, known)
    new_files: dict[str, str] = {}
    bake_module, spec = convert_module(module, args, new_files)
    if bake_module == "template":
        check_names((templates or {}).get(spec["src"], ""), names)
    if bake_module == "packages" and isinstance(spec, str):
        if loop is not None:
            raise Unmappable("a loop over packages named by a var")
        loop, spec = spec, ["{{ item }}"]
    step: dict[str, Any] = {}
    if task.get("name"):
        step["name"] = str(task["name"])
    step[bake_module] = spec
    if loop is not None:
        step["loop"] = loop
    if when is not None:
        conds = when if isinstance(when, list) else [when]
        step["when"] = " and ".join(f"({c})" if len(conds) > 1 else str(c) for c in conds)
    notify = task.get("notify")
    if notify:
        kept = []
        for n in [notify] if isinstance(notify, str) else list(notify):
            if handlers.get(n) == "ansible":
                raise Unmappable(f"notifies `{n}`, a handler that stays in Ansible")
            if handlers.get(n) == "mapped":
                kept.append(n)
        if kept:
            step["notify"] = kept
    files.update(new_files)
    return step


def _title(task: Mapping[str, Any], n: int) -> str:
    return str(task.get("name") or f"task {n}")


def _handlers(
    plays: Sequence[Mapping[str, Any]],
    known: frozenset[str],
    out: Imported,
    templates: Mapping[str, str] | None,
) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Handlers: name → mapped | dropped | ansible, the mapped ones, the ones kept."""
    fate: dict[str, str] = {}
    mapped: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for play in plays:
        for h in play.get("handlers") or []:
            title = _title(h, 0)
            try:
                step = convert_task(h, known, {}, out.files, templates)
                if "loop" in step:
                    raise Unmappable("a looped handler")
                step["name"] = title
                mapped.append(step)
                fate[title] = "mapped"
                out.report.append(Line(f"handler {title}", "mapped", _module_of(step)))
            except Dropped as why:
                fate[title] = "dropped"
                out.report.append(Line(f"handler {title}", "dropped", str(why)))
            except (Unmappable, KeyError) as why:
                fate[title] = "ansible"
                kept.append(dict(h))
                out.report.append(Line(f"handler {title}", "ansible", _why(why)))
    return fate, mapped, kept


def _module_of(step: Mapping[str, Any]) -> str:
    return next(k for k in step if k not in ("name", "loop", "when", "notify"))


class _Steps:
    """Steps in order; runs of tasks that stay Ansible become one playbook each."""

    def __init__(self, out: Imported, source: str, gather: bool, handlers: list[dict[str, Any]]) -> None:
        self.out, self.source, self.gather, self.handlers = out, source, gather, handlers
        self.steps: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []

    def flush(self, roles: Sequence[Any] = ()) -> None:
        if not self.pending and not roles:
            return
        playbook = f"imported-{len(self.out.playbooks) + 1:02d}.yml"
        play: dict[str, Any] = {"name": f"imported from {self.source}", "hosts": "all"}
        if not self.gather:
            play["gather_facts"] = False
        if roles:
            play["roles"] = list(roles)
        if self.pending:
            play["tasks"] = list(self.pending)
        if self.handlers:
            play["handlers"] = list(self.handlers)
        self.out.playbooks[playbook] = [play]
        self.steps.append({"name": f"ansible: {playbook}", "ansible": {"playbook": f"ansible/{playbook}"}})
        self.pending.clear()

    def add(self, step: dict[str, Any]) -> None:
        self.flush()
        self.steps.append(step)


def convert(
    plays: Sequence[Mapping[str, Any]],
    name: str,
    extends: str,
    source: str,
    templates: Mapping[str, str] | None = None,
) -> Imported:
    """The plays of a playbook → a recipe extending ``extends``."""
    variables: dict[str, Any] = {}
    for play in plays:
        variables.update(play.get("vars") or {})
    known = frozenset(variables) | ALLOWED
    out = Imported(recipe={})
    fate, mapped_handlers, kept_handlers = _handlers(plays, known, out, templates)
    gather = all(p.get("gather_facts", True) is not False for p in plays)
    steps = _Steps(out, source, gather, kept_handlers)
    n = 0
    for play in plays:
        for section in ("pre_tasks", "roles", "tasks", "post_tasks"):
            items = play.get(section) or []
            if section == "roles" and items:
                steps.flush()
                steps.flush(items)
                for role in items:
                    role_name = role if isinstance(role, str) else role.get("role", role.get("name"))
                    out.report.append(
                        Line(f"role {role_name}", "ansible", "a role runs as it is, in an ansible step")
                    )
                continue
            for task in items if section != "roles" else ():
                n += 1
                title = _title(task, n)
                try:
                    step = convert_task(task, known, fate, out.files, templates)
                except Dropped as why:
                    out.report.append(Line(title, "dropped", str(why)))
                    continue
                except (Unmappable, KeyError) as why:
                    steps.pending.append(dict(task))
                    out.report.append(Line(title, "ansible", _why(why)))
                    continue
                steps.add(step)
                out.report.append(Line(title, "mapped", _module_of(step)))
    steps.flush()
    recipe: dict[str, Any] = {
        "name": name,
        "version": "0.1.0",
        "description": f"imported from {source}",
        "extends": extends,
    }
    if variables:
        recipe["vars"] = variables
    recipe["steps"] = steps.steps
    if mapped_handlers:
        recipe["handlers"] = mapped_handlers
    out.recipe = recipe
    return out


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"lacks `{exc.args[0]}`"
    return str(exc)
