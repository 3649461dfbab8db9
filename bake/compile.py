"""Plan → Packer HCL2 template + step scripts + files to upload (pure).

The templates live in `packer_templates/` (one per Packer source type, plus a shared
build block). Output is a mapping of relative path → bytes, identical for identical
input, written by :func:`write_tree` atomically into a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from bake import hcl
from bake.plan import Plan
from bake.recipe.render import SECRET_END, SECRET_MARK
from bake.steps import CompiledStep, compile_step

TEMPLATE_DIR = Path(
    os.environ.get("BAKE_TEMPLATES", Path(__file__).resolve().parent.parent / "packer_templates")
)
TEMPLATE_FILES = {
    "docker": ("docker.pkr.hcl.j2", "_build.pkr.hcl.j2"),
    "qemu": ("qemu.pkr.hcl.j2", "_build.pkr.hcl.j2"),
    "amazon-ebs": ("amazon-ebs.pkr.hcl.j2", "_build.pkr.hcl.j2"),
    "googlecompute": ("googlecompute.pkr.hcl.j2", "_build.pkr.hcl.j2"),
}
PLUGINS = {
    "docker": ("docker", "github.com/hashicorp/docker", ">= 1.0.0"),
    "qemu": ("qemu", "github.com/hashicorp/qemu", ">= 1.0.0"),
    "amazon-ebs": ("amazon", "github.com/hashicorp/amazon", ">= 1.0.0"),
    "googlecompute": ("googlecompute", "github.com/hashicorp/googlecompute", ">= 1.0.0"),
}

# cloud images log in as an unprivileged user; steps run as root through sudo
SUDO_EXECUTE = "chmod +x {{ .Path }}; sudo -E env {{ .Vars }} {{ .Path }}"


@dataclass(frozen=True)
class Rendered:
    template_name: str
    files: Mapping[str, bytes]  # relative path → content
    secrets: tuple[str, ...]  # names of sensitive variables the build needs


def template_digests(target: str, folder: Path = TEMPLATE_DIR) -> dict[str, str]:
    return {
        name: "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in TEMPLATE_FILES[target]
    }


def _env(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
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


def docker_changes(plan: Plan) -> list[str]:
    conf = plan.resolved.recipe.targets.docker
    changes: list[str] = []
    # Always set both: the build container ran /bin/sh, which `docker commit` would keep.
    # The resolved config already carries what a parent recipe declared.
    entry = list(conf.entrypoint) if conf and conf.entrypoint is not None else []
    cmd = list(conf.cmd) if conf and conf.cmd is not None else []
    changes.append("ENTRYPOINT " + json.dumps(entry))
    changes.append("CMD " + json.dumps(cmd))
    if conf:
        changes += [f"ENV {k}={json.dumps(v)}" for k, v in sorted(conf.env.items())]
        changes += [f"EXPOSE {p}/tcp" for p in conf.expose]
        if conf.user:
            changes.append(f"USER {conf.user}")
        if conf.workdir:
            changes.append(f"WORKDIR {conf.workdir}")
    for k, v in sorted(labels(plan).items()):
        changes.append(f"LABEL {json.dumps(k)}={json.dumps(v)}")
    return changes


def labels(plan: Plan) -> dict[str, str]:
    out = {
        "org.opencontainers.image.title": plan.name,
        "org.opencontainers.image.version": plan.version,
        "io.bake.recipe": plan.name,
        "io.bake.version": plan.version,
        "io.bake.key": plan.key,
        "io.bake.target": plan.target,
    }
    conf = plan.resolved.recipe.targets.docker
    if conf and plan.target == "docker":
        out.update(conf.labels)
    if plan.resolved.recipe.description:
        out["org.opencontainers.image.description"] = plan.resolved.recipe.description
    return out


def image_repository(name: str) -> str:
    return f"bake/{name}"


def base_reference(plan: Plan) -> str:
    """Default for the `base_image` variable; builds pass the exact image ID instead."""
    r = plan.resolved.recipe
    if plan.parent is not None:
        return f"{image_repository(plan.parent.name)}:key-{plan.parent.short_key}"
    if r.base and r.base.image:
        return r.base.image
    return f"{image_repository(plan.name)}-rootfs:latest"


def compile_plan(plan: Plan, folder: Path = TEMPLATE_DIR) -> Rendered:
    resolved = plan.resolved
    files_by_step = {f.step: f.content for f in resolved.files}
    steps: list[CompiledStep] = [compile_step(i, step, files_by_step.get(i)) for i, step in resolved.steps]
    secrets = tuple(s.name for s in resolved.recipe.secrets)
    out: dict[str, bytes] = {}
    for s in steps:
        if s.script is not None:
            out[f"scripts/{s.script_name}.sh"] = s.script.encode()
        if s.upload is not None:
            out[f"files/{s.upload.name}"] = s.upload.content
    context: dict[str, Any] = {
        "plan": plan,
        "name": plan.name,
        "source_name": plan.name.replace(".", "-"),
        "version": plan.version,
        "target": plan.target,
        "source_type": plan.target,
        "execute_command": SUDO_EXECUTE if plan.target in ("amazon-ebs", "googlecompute") else None,
        "key": plan.key,
        "short_key": plan.short_key,
        "conf": resolved.recipe.targets.get(plan.target),
        "packer": plan.packer,
        "plugin": PLUGINS[plan.target],
        "steps": steps,
        "secrets": secrets,
        "labels": labels(plan),
        "changes": docker_changes(plan) if plan.target == "docker" else [],
        "repository": image_repository(plan.name),
        "base_image": base_reference(plan),
        "parent": plan.parent,
        "bootstrap": resolved.recipe.base.bootstrap if resolved.recipe.base else None,
    }
    main = TEMPLATE_FILES[plan.target][0]
    text = _env(folder).get_template(main).render(context)
    template_name = f"{plan.name}.pkr.hcl"
    out[template_name] = text.encode()
    return Rendered(template_name=template_name, files=dict(sorted(out.items())), secrets=secrets)


def write_tree(rendered: Rendered, out: Path) -> Path:
    """Write the rendered files into `out` (replaced as a whole); return the template path."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, content in rendered.files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            if rel.startswith("scripts/"):
                path.chmod(0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / rendered.template_name
