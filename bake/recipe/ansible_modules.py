"""Ansible modules → bake modules, one converter each (pure).

A converter takes a task's arguments and returns the bake module and its settings, or
raises :class:`Unmappable` (the task stays Ansible, with the reason) or
:class:`Dropped` (the task does nothing in an image: a debug message, a service start).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any


class Unmappable(Exception):
    """Why a task stays Ansible."""


class Dropped(Exception):
    """A task that does nothing in an image."""


def _mode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):  # YAML 1.1 reads 0644 as an octal number
        return f"0{value:o}"
    text = str(value)
    if re.fullmatch(r"0?[0-7]{3,4}", text):
        return text if text.startswith("0") else "0" + text
    raise Unmappable(f"mode {value!r} (bake takes octal modes)")


def _pick(args: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if n in args:
            return args[n]
    return None


def _only(args: Mapping[str, Any], allowed: set[str], module: str) -> None:
    extra = sorted(set(args) - allowed)
    if extra:
        raise Unmappable(f"`{module}` with {', '.join(f'`{e}`' for e in extra)}")


def _owner(spec: dict[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("owner", "group"):
        if args.get(key) is not None:
            spec[key] = str(args[key])
    mode = _mode(args.get("mode"))
    if mode is not None:
        spec["mode"] = mode
    return spec


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise Unmappable(f"a list given as {value!r}")


ATTRS = {"owner", "group", "mode"}
Files = dict[str, str]


def _copy(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    if args.get("remote_src"):
        raise Unmappable("copies inside the image (remote_src)")
    _only(args, {"src", "dest", "content", *ATTRS, "force"}, "copy")
    if "content" in args:
        return "file", _owner({"dest": args["dest"], "content": str(args["content"])}, args)
    src = str(args["src"])
    files[f"files/{src}"] = f"files/{src}"
    return "copy", _owner({"src": f"files/{src}", "dest": args["dest"]}, args)


def _template(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(args, {"src", "dest", *ATTRS}, "template")
    src = str(args["src"])
    files[f"templates/{src}"] = f"templates/{src}"
    return "template", _owner({"src": f"templates/{src}", "dest": args["dest"]}, args)


def _packages(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(args, {"name", "pkg", "state", "update_cache", "install_recommends", "cache_valid_time"}, "apt")
    if args.get("state", "present") not in ("present", "latest", "installed"):
        raise Unmappable(f"a package task with state: {args.get('state')}")
    names = _pick(args, "name", "pkg")
    if names is None:
        raise Dropped("updates the package lists alone: bake's `packages` steps update them")
    if isinstance(names, str) and "{{" in names:
        return "packages", names  # a list var: the step loops over it (see convert_task)
    return "packages", _as_list(names)


def _user(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(
        args, {"name", "uid", "groups", "shell", "home", "system", "append", "create_home", "state"}, "user"
    )
    if args.get("state", "present") != "present":
        raise Unmappable("removes a user")
    spec: dict[str, Any] = {"name": args["name"]}
    for key in ("uid", "shell", "home", "system"):
        if args.get(key) is not None:
            spec[key] = args[key]
    if args.get("groups"):
        spec["groups"] = _as_list(args["groups"])
    return "user", spec


def _group(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(args, {"name", "gid", "system", "state"}, "group")
    if args.get("state", "present") != "present":
        raise Unmappable("removes a group")
    return "group", {k: args[k] for k in ("name", "gid", "system") if args.get(k) is not None}


def _lineinfile(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    keys = {
        "path",
        "dest",
        "name",
        "line",
        "regexp",
        "regex",
        "state",
        "insertafter",
        "insertbefore",
        "create",
    }
    _only(args, {*keys, *ATTRS}, "lineinfile")
    spec: dict[str, Any] = {"path": _pick(args, "path", "dest", "name")}
    for src_key, key in (("line", "line"), ("regexp", "regexp"), ("regex", "regexp"), ("state", "state")):
        if args.get(src_key) is not None:
            spec[key] = str(args[src_key])
    for key in ("insertafter", "insertbefore", "create"):
        if args.get(key) is not None:
            spec[key] = args[key]
    return "lineinfile", _owner(spec, args)


def _blockinfile(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    keys = {"path", "dest", "block", "content", "marker", "state", "insertafter", "insertbefore", "create"}
    _only(args, {*keys, *ATTRS}, "blockinfile")
    spec = {"path": _pick(args, "path", "dest"), "block": str(_pick(args, "block", "content") or "")}
    for key in ("marker", "state", "insertafter", "insertbefore", "create"):
        if args.get(key) is not None:
            spec[key] = args[key]
    return "blockinfile", _owner(spec, args)


def _get_url(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(args, {"url", "dest", "checksum", *ATTRS}, "get_url")
    checksum = str(args.get("checksum") or "")
    if not checksum.startswith("sha256:"):
        raise Unmappable("get_url without `checksum: sha256:…` (bake verifies every download)")
    return "get_url", _owner({"url": args["url"], "dest": args["dest"], "sha256": checksum[7:]}, args)


def _unarchive(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(args, {"src", "dest", "remote_src", "creates", "owner", "group"}, "unarchive")
    spec: dict[str, Any] = {"src": str(args["src"]), "dest": args["dest"]}
    if args.get("remote_src"):
        spec["remote_src"] = True
    else:
        files[f"files/{args['src']}"] = f"files/{args['src']}"
        spec["src"] = f"files/{args['src']}"
    for key in ("creates", "owner", "group"):
        if args.get(key) is not None:
            spec[key] = args[key]
    return "unarchive", spec


def _sysctl(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    _only(args, {"name", "value", "sysctl_file", "state", "reload"}, "sysctl")
    spec = {
        "name": args["name"],
        "value": str(args.get("value", "")),
        "reload": bool(args.get("reload", False)),
    }
    if args.get("sysctl_file"):
        spec["file"] = args["sysctl_file"]
    if args.get("state"):
        spec["state"] = args["state"]
    return "sysctl", spec


def _cron(args: dict[str, Any], files: Files) -> tuple[str, Any]:
    keys = {
        "name",
        "job",
        "minute",
        "hour",
        "day",
        "month",
        "weekday",
        "special_time",
        "user",
        "cron_file",
        "state",
    }
    _only(args, keys, "cron")
    return "cron", {k: (str(v) if k == "cron_file" else v) for k, v in args.items()}


CONVERTERS: dict[str, Callable[[dict[str, Any], Files], tuple[str, Any]]] = {
    "copy": _copy,
    "template": _template,
    "apt": _packages,
    "package": _packages,
    "dnf": _packages,
    "yum": _packages,
    "user": _user,
    "group": _group,
    "service": lambda args, files: _service("service", args),
    "systemd": lambda args, files: _service("systemd", args),
    "systemd_service": lambda args, files: _service("systemd_service", args),
    "lineinfile": _lineinfile,
    "blockinfile": _blockinfile,
    "file": lambda args, files: _file(args),
    "get_url": _get_url,
    "unarchive": _unarchive,
    "sysctl": _sysctl,
    "cron": _cron,
}


def convert_module(module: str, args: Any, files: Files) -> tuple[str, Any]:
    """(bake module, its settings); ``files`` collects files to copy beside the recipe."""
    if module in ("shell", "command"):
        return _command(module, args)
    converter = CONVERTERS.get(module)
    if converter is None:
        raise Unmappable(f"module `{module}` has no bake counterpart")
    if not isinstance(args, dict):
        raise Unmappable(f"`{module}` with arguments {args!r}")
    return converter(args, files)


def _command(module: str, args: Any) -> tuple[str, Any]:
    if isinstance(args, dict):
        extra = set(args) - {"_raw", "cmd", "argv", "creates", "chdir", "executable"}
        if extra:
            raise Unmappable(f"`{module}` with {', '.join(sorted(extra))}")
        text = args.get("_raw") or args.get("cmd")
        if args.get("argv"):
            text = shlex.join(str(a) for a in args["argv"])
        if not text:
            raise Unmappable(f"`{module}` without a command")
        text = str(text)
        if args.get("chdir"):
            text = f"cd {shlex.quote(str(args['chdir']))} && {text}"
        if args.get("creates"):
            text = f"[ -e {shlex.quote(str(args['creates']))} ] || {{ {text}; }}"
        if len(args) > 1 or args.get("argv"):
            return "shell", text
        args = text
    if module == "command":
        return "command", shlex.split(str(args))
    return "shell", str(args)


def _service(module: str, args: Mapping[str, Any]) -> tuple[str, Any]:
    _only(args, {"name", "enabled", "state", "daemon_reload", "masked"}, module)
    if args.get("masked"):
        raise Unmappable("masks a unit")
    if "enabled" not in args:
        raise Dropped(
            f"`{module}` with state: {args.get('state')}: an image starts no services while it is "
            "baked; they start when an instance boots"
        )
    return "service", {"name": args["name"], "enabled": bool(args["enabled"])}


def _file(args: Mapping[str, Any]) -> tuple[str, Any]:
    _only(args, {"path", "dest", "name", "state", "src", "mode", "owner", "group", "force", "follow"}, "file")
    state = args.get("state", "file")
    path = _pick(args, "path", "dest", "name")
    if state == "directory":
        return "file", _owner({"dest": path, "state": "directory"}, args)
    if state == "link":
        return "file", {"dest": path, "state": "link", "src": args["src"]}
    if state == "absent":
        return "file", {"dest": path, "state": "absent"}
    raise Unmappable(f"`file` with state: {state}")
