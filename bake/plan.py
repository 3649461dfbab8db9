"""A resolved recipe for one target plus its bake key.

The bake key is a sha256 over every input that can change the image: the resolved recipe
(rendered steps, verify checks, target config), the bytes of every referenced file, the
parent's bake key, the Packer templates used, the Packer version and the compiler's format
version. Same key ⇒ same inputs ⇒ nothing to rebuild. Secret *values* are not inputs (they
must never be written anywhere, the record included); which secrets are used is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bake.infra.packer import PackerInfo
from bake.recipe.load import Resolved, resolve, resolve_targets
from bake.recipe.models import Bootstrap

# v2: container images carry OCI annotations and a default PATH, and no /packer-files
FORMAT = "bake.plan/v2"


@dataclass(frozen=True)
class Plan:
    resolved: Resolved
    packer: PackerInfo
    templates: Mapping[str, str]  # template file name → sha256
    parent: Plan | None
    inputs: Mapping[str, str] = field(default_factory=dict)  # input name → digest
    key: str = ""

    @property
    def name(self) -> str:
        return self.resolved.recipe.name

    @property
    def version(self) -> str:
        return self.resolved.recipe.version

    @property
    def target(self) -> str:
        return self.resolved.target

    @property
    def short_key(self) -> str:
        return self.key.removeprefix("sha256:")[:12]

    def chain(self) -> list[Plan]:
        """Ancestors first, this plan last."""
        out: list[Plan] = []
        p: Plan | None = self
        while p is not None:
            out.append(p)
            p = p.parent
        return list(reversed(out))


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def recipe_document(resolved: Resolved) -> dict[str, Any]:
    """The resolved recipe as plain data: what the bake key and `bake plan` show."""
    recipe = resolved.recipe
    target_conf = recipe.targets.get(resolved.target)
    return {
        "name": recipe.name,
        "version": recipe.version,
        "target": resolved.target,
        "base": recipe.base.model_dump(mode="json", exclude_none=True) if recipe.base else None,
        "extends": recipe.extends,
        "target_config": target_conf.model_dump(mode="json", by_alias=True) if target_conf else {},
        "secrets": [s.model_dump(mode="json") for s in recipe.secrets],
        "steps": [
            {
                "index": i,
                **s.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"when"}),
            }
            for i, s in resolved.steps
        ],
        "handlers": [
            {"index": i, **h.model_dump(mode="json", exclude_none=True, exclude={"when"})}
            for i, h in resolved.handlers
        ],
        # the checks that apply to this target, like the steps (`when` itself is no input)
        "verify": [c.model_dump(mode="json", exclude_none=True, exclude={"when"}) for c in resolved.verify],
        "volatile": list(recipe.volatile),
        # an Ansible play gets every var (only used ones reach other steps, rendered)
        **({"play_vars": dict(resolved.vars)} if any(s.ansible for _, s in resolved.steps) else {}),
    }


Upstream = Callable[[Bootstrap], Mapping[str, str]]


def ansible_version() -> str:
    """The ansible-core that runs plays (bake's own dependency)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ansible-core {version('ansible-core')}"
    except PackageNotFoundError:
        return "ansible-core not installed"


def make_plan(
    resolved: Resolved,
    packer: PackerInfo,
    templates: Mapping[str, str],
    upstream: Upstream | None = None,
) -> Plan:
    parent = make_plan(resolved.parent, packer, templates, upstream) if resolved.parent else None
    inputs: dict[str, str] = {
        "recipe": _sha(_canonical(recipe_document(resolved))),
        "packer": _sha(packer.text.encode()),
        "format": _sha(FORMAT.encode()),
    }
    for name, digest in sorted(templates.items()):
        inputs[f"template:{name}"] = digest
    for f in resolved.files:
        inputs[f.input_name] = f.digest
    if any(s.ansible for _, s in resolved.steps):
        inputs["ansible-core"] = _sha(ansible_version().encode())  # it runs the play
    if parent is not None:
        inputs[f"parent:{parent.name}"] = parent.key
    base = resolved.recipe.base
    if upstream is not None and base is not None and base.bootstrap is not None:
        inputs.update(upstream(base.bootstrap))  # upstream package state (see bake.upstream)
    key = _sha(_canonical(inputs))
    return Plan(resolved=resolved, packer=packer, templates=templates, parent=parent, inputs=inputs, key=key)


def plan_document(plan: Plan) -> dict[str, Any]:
    """`bake plan --json`."""
    r = plan.resolved
    return {
        "name": plan.name,
        "version": plan.version,
        "target": plan.target,
        "bake_key": plan.key,
        "chain": [p.name for p in plan.chain()],
        "vars": {k: v for k, v in sorted(r.vars.items())},
        "steps": [
            {"index": i + 1, "module": s.module, "name": s.name or s.module, "when": s.when}
            for i, s in r.steps
        ],
        "handlers": [{"index": i + 1, "module": h.module, "name": h.name} for i, h in r.handlers],
        "verify": len(r.verify),
        "inputs": dict(plan.inputs),
        "packer_version": plan.packer.text,
        "parent": {
            "name": plan.parent.name,
            "version": plan.parent.version,
            "bake_key": plan.parent.key,
        }
        if plan.parent
        else None,
    }


def plan_recipe(
    path: Path,
    packer: PackerInfo,
    *,
    targets: Sequence[str] = (),
    var_files: Sequence[Path] = (),
    extra_vars: Mapping[str, str] | None = None,
    search_path: Sequence[Path] = (),
    upstream: Upstream | None = None,
) -> list[Plan]:
    """Plans for the requested targets (default: every target the recipe declares)."""
    from bake.compile.template import template_digests

    if targets:
        resolved = [
            resolve(path, t, var_files=var_files, extra_vars=extra_vars, search_path=search_path)
            for t in targets
        ]
    else:
        resolved = list(
            resolve_targets(
                path, var_files=var_files, extra_vars=extra_vars, search_path=search_path
            ).values()
        )
    return [make_plan(r, packer, template_digests(r.target), upstream) for r in resolved]


def upstream_pins(plan: Plan) -> dict[str, str]:
    """The upstream inputs of a plan's base (they decide whether the rootfs is rebuilt)."""
    root = plan.chain()[0]
    return {k: v for k, v in root.inputs.items() if k.startswith("upstream:")}


def changed_inputs(plan: Plan, previous: Mapping[str, str]) -> list[str]:
    """Inputs whose digest differs from a previous bake's (added and removed too)."""
    names = sorted(set(plan.inputs) | set(previous))
    return [n for n in names if plan.inputs.get(n) != previous.get(n)]
