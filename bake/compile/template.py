"""Plan → Packer HCL2 template + step scripts + files to upload (pure).

The templates live in `packer_templates/` (one per Packer source type, plus a shared
build block). Output is a mapping of relative path → bytes, identical for identical
input, written by :func:`write_tree` atomically into a folder.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from bake import targets
from bake.compile import hcl
from bake.compile.play import compile_play
from bake.compile.steps import CompiledStep, compile_handler, compile_step, marker
from bake.infra.fsutil import TMP_PREFIX, replace_dir
from bake.plan import Plan
from bake.recipe.models import Step
from bake.recipe.render import SECRET_END, SECRET_MARK

TEMPLATE_DIR = Path(
    os.environ.get("BAKE_TEMPLATES", Path(__file__).resolve().parents[2] / "packer_templates")
)
SHARED_TEMPLATE = "_build.pkr.hcl.j2"  # header, variables, build block: every target's


@dataclass(frozen=True)
class Rendered:
    template_name: str
    files: Mapping[str, bytes]  # relative path → content
    secrets: tuple[str, ...]  # names of sensitive variables the build needs
    runs_on_host: bool = False  # a step runs on the build host (an Ansible play)


def template_files(target: str) -> tuple[str, ...]:
    return (targets.get(target).template, SHARED_TEMPLATE)


def search_path(target: str, folder: Path = TEMPLATE_DIR) -> list[Path]:
    """Where a target's templates are found: packer_templates/, then beside the target's
    own module (so a plug-in can ship its template with it)."""
    return [folder, Path(inspect.getfile(type(targets.get(target)))).parent]


def template_digests(target: str, folder: Path = TEMPLATE_DIR) -> dict[str, str]:
    found = {}
    for name in template_files(target):
        path = next((d / name for d in search_path(target, folder) if (d / name).is_file()), folder / name)
        found[name] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _env(folders: list[Path]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hcl"] = hcl.string
    env.filters["hcl_list"] = hcl.string_list
    env.filters["hcl_value"] = hcl.value
    env.filters["hcl_env"] = env_string
    return env


def env_string(pair: tuple[str, str]) -> str:
    """`K=V` as an HCL string; secret markers become `${var.secret_NAME}` interpolations."""
    quoted = hcl.string(f"{pair[0]}={pair[1]}")
    marker = hcl.string(SECRET_MARK)[1:-1]
    end = hcl.string(SECRET_END)[1:-1]
    while marker in quoted:
        start = quoted.index(marker)
        stop = quoted.index(end, start + len(marker))
        name = quoted[start + len(marker) : stop]
        quoted = quoted[:start] + "${var.secret_" + name + "}" + quoted[stop + len(end) :]
    return quoted


def labels(plan: Plan) -> dict[str, str]:
    """Labels (container labels, cloud image tags) every image gets."""
    out = {
        "org.opencontainers.image.title": plan.name,
        "org.opencontainers.image.version": plan.version,
        "io.bake.recipe": plan.name,
        "io.bake.version": plan.version,
        "io.bake.key": plan.key,
        "io.bake.target": plan.target,
    }
    if plan.resolved.recipe.description:
        out["org.opencontainers.image.description"] = plan.resolved.recipe.description
    return out


def compile_steps(plan: Plan) -> list[CompiledStep]:
    """The plan's steps (a looped step once, with all its items) and then its handlers."""
    resolved = plan.resolved
    by_item = {(f.step, f.item): f.content for f in resolved.files}
    groups: dict[int, list[Step]] = {}
    for i, step in resolved.steps:
        groups.setdefault(i, []).append(step)
    present = {i for i, _ in resolved.handlers}
    numbers = {h.name: i for i, h in resolved.handlers}
    secrets = tuple(s.name for s in resolved.recipe.secrets)
    out: list[CompiledStep] = []
    for i, items in groups.items():
        if items[0].ansible is not None:
            inputs = [(f.src, f.content) for f in resolved.files if f.step == i]
            out.append(compile_play(i, items[0], inputs, play_vars(plan), secrets))
            continue
        notify = sorted({marker(numbers[n]) for s in items for n in s.notify if numbers.get(n) in present})
        files = [by_item.get((i, k)) for k in range(len(items))]
        out.append(compile_step(i, items, files, notify))
    for i, handler in resolved.handlers:
        out.append(compile_handler(i, handler, by_item.get((i, 0))))
    return out


def play_vars(plan: Plan) -> dict[str, Any]:
    """What an Ansible play gets as extra vars (secrets apart): the recipe's vars and the
    built-ins."""
    return {
        **plan.resolved.vars,
        "target": plan.target,
        "recipe": {"name": plan.name, "version": plan.version},
    }


def compile_plan(plan: Plan, folder: Path = TEMPLATE_DIR) -> Rendered:
    resolved = plan.resolved
    steps = compile_steps(plan)
    secrets = tuple(s.name for s in resolved.recipe.secrets)
    out: dict[str, bytes] = {}
    for s in steps:
        out[f"scripts/{s.script_name}.sh"] = s.script.encode()
        for up in s.uploads:
            out[f"files/{up.name}"] = up.content
        for rel, content in s.local_files:
            out[f"files/{rel}"] = content
    target = targets.get(plan.target)
    plugin = target.plugin
    context: dict[str, Any] = {
        "plan": plan,
        "name": plan.name,
        "source_name": plan.name.replace(".", "-"),
        "version": plan.version,
        "target": plan.target,
        "source_type": plan.target,
        "execute_command": None,
        "key": plan.key,
        "short_key": plan.short_key,
        "conf": resolved.recipe.targets.get(plan.target),
        "packer": plan.packer,
        "plugin": (plugin.name, plugin.source, plugin.version),
        "steps": steps,
        "secrets": secrets,
        "labels": labels(plan),
        "parent": plan.parent,
        "bootstrap": resolved.recipe.base.bootstrap if resolved.recipe.base else None,
        **target.template_context(plan),
    }
    text = _env(search_path(plan.target, folder)).get_template(target.template).render(context)
    template_name = f"{plan.name}.pkr.hcl"
    out[template_name] = text.encode()
    return Rendered(
        template_name=template_name,
        files=dict(sorted(out.items())),
        secrets=secrets,
        runs_on_host=any(s.local for s in steps),
    )


def write_tree(rendered: Rendered, out: Path) -> Path:
    """Write the rendered files into `out` (replaced as a whole); return the template path."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}.", dir=out.parent))
    try:
        for rel, content in rendered.files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            if rel.startswith("scripts/"):
                path.chmod(0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / rendered.template_name
