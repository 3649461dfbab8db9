"""`bake plan --all DIR`: the bakes a folder needs, before anything runs, in waves — for
the CI system users already run to fan out (one job per recipe per wave).

A recipe needs a bake when the registry holds no good build of its bake key (a cache
miss). Waves follow `extends`: a recipe whose parent also needs a bake comes in a later
wave than its parent; one whose parent is published starts in the first. Every job then
runs `bake build RECIPE --registry URL`, which fetches published parents by digest.
Formats: ``json``; ``github-matrix`` (a GitHub Actions ``strategy.matrix`` with an
``include`` list); ``gitlab`` (a child-pipeline YAML, one stage per wave).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bake.app import graph
from bake.app.build import upstream
from bake.app.publish import find_by_key
from bake.app.session import RegistryAccess, Session
from bake.errors import BakeError
from bake.plan import plan_recipe
from bake.registry.layout import ROOT, metadata_file

FORMATS = ("text", "json", "github-matrix", "gitlab")


@dataclass(frozen=True)
class Needed:
    name: str
    recipe: str  # the recipe's path, as the jobs run it
    version: str
    target: str
    bake_key: str
    wave: int  # 1, 2, …: after every earlier wave

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "recipe": self.recipe,
            "version": self.version,
            "target": self.target,
            "bake_key": self.bake_key,
            "wave": self.wave,
        }


@dataclass(frozen=True)
class FleetPlan:
    registry: str | None
    needed: tuple[Needed, ...]  # in wave order
    cached: Mapping[str, str]  # recipe name -> the published version it has
    offline: bool = False  # bake keys without the mirror's state: the jobs must bake so too

    @property
    def waves(self) -> list[list[Needed]]:
        count = max((n.wave for n in self.needed), default=0)
        return [[n for n in self.needed if n.wave == w] for w in range(1, count + 1)]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "registry": self.registry,
            "waves": [[n.to_json() for n in wave] for wave in self.waves],
            "cached": dict(self.cached),
            "offline": self.offline,
        }


def waves(nodes: Mapping[str, graph.Node], needed: set[str]) -> dict[str, int]:
    """The wave of every needed node: 1 + its parent's when the parent is needed too."""
    out: dict[str, int] = {}
    for name in graph.order(nodes):
        if name in needed:
            parent = nodes[name].parent
            out[name] = out[parent] + 1 if parent in out else 1
    return out


def plan_all(
    session: Session, folder: Path, target: str, access: RegistryAccess | None, *, offline: bool = False
) -> FleetPlan:
    """Plan every recipe of ``folder`` for ``target``; with a registry, keep the misses."""
    nodes = graph.discover(folder)
    info, up = session.packer_info(), upstream(offline)
    search = [folder, *session.search_path()]
    plans = {}
    for name in graph.order(nodes):
        (plans[name],) = plan_recipe(
            nodes[name].path, info, targets=[target], search_path=search, upstream=up
        )
    cached: dict[str, str] = {}
    url = None
    if access is not None:  # read-only: a plan job needs the trusted root, not a signing key
        registry = session.open_registry(access)
        url = registry.url
        if registry.read_metadata(metadata_file(ROOT, 1)) is not None:
            snapshot = session.reader(access).snapshot
            for name, p in plans.items():
                hit = find_by_key(snapshot.get(p.name), p.key)
                if hit is not None:
                    cached[name] = hit[0]
    wave_of = waves(nodes, {n for n in plans if n not in cached})
    cwd = Path.cwd()
    needed = [
        Needed(name, _shown(nodes[name].path, cwd), plans[name].version, target, plans[name].key, wave)
        for name, wave in sorted(wave_of.items(), key=lambda nw: (nw[1], nw[0]))
    ]
    return FleetPlan(url, tuple(needed), cached, offline)


def _shown(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def render(plan: FleetPlan, fmt: str, wave: int | None = None) -> str:
    """The plan in ``fmt``; ``wave``: only that wave's bakes."""
    if fmt not in FORMATS:
        raise BakeError(f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}", exit_code=2)
    picked = [n for n in plan.needed if wave is None or n.wave == wave]
    if fmt == "json":
        return json.dumps(plan.to_json(), indent=2, sort_keys=True)
    if fmt == "github-matrix":
        return json.dumps({"include": [n.to_json() for n in picked]}, separators=(",", ":"))
    if fmt == "gitlab":
        return gitlab_pipeline(picked, plan.registry, offline=plan.offline)
    return _text(plan, picked)


def gitlab_pipeline(needed: Sequence[Needed], registry: str | None, *, offline: bool = False) -> str:
    """A GitLab child pipeline: one stage per wave, one job per bake."""
    stages = sorted({n.wave for n in needed})
    doc: dict[str, object] = {"stages": [f"wave-{w}" for w in stages] or ["nothing"]}
    where = ' --registry "$BAKE_REGISTRY"' + (" --offline" if offline else "")
    for n in needed:
        doc[f"bake {n.name} ({n.target})"] = {
            "stage": f"wave-{n.wave}",
            "script": [f"bake build {n.recipe} -t {n.target}{where} --json"],
            "variables": {"BAKE_KEY": n.bake_key},
        }
    if not needed:  # GitLab refuses a pipeline without jobs
        doc["nothing to bake"] = {"stage": "nothing", "script": ["echo every bake key is published"]}
    header = f"# bake plan --all: {len(needed)} bakes in {len(stages)} waves" + (
        f" for {registry}\n" if registry else "\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)


def _text(plan: FleetPlan, picked: Sequence[Needed]) -> str:
    lines = []
    for w in sorted({n.wave for n in picked}):
        lines.append(f"wave {w}:")
        lines += [
            f"  {n.name} {n.version} ({n.target})  {n.recipe}  key {n.bake_key[:19]}"
            for n in picked
            if n.wave == w
        ]
    for name, version in sorted(plan.cached.items()):
        lines.append(f"published: {name} {version}")
    if not picked:
        lines.append("nothing to bake" + (f": {plan.registry} holds every bake key" if plan.registry else ""))
    return "\n".join(lines)
