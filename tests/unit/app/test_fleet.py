"""`bake plan --all`: waves by `extends` over the cache misses, and the CI formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bake.app import fleet, graph
from bake.app.fleet import FleetPlan, Needed
from bake.errors import BakeError

NODES = {
    "base": graph.Node("base", Path("base.yaml"), None),
    "web": graph.Node("web", Path("web.yaml"), "base"),
    "app": graph.Node("app", Path("app.yaml"), "base"),
    "site": graph.Node("site", Path("site.yaml"), "web"),
    "tools": graph.Node("tools", Path("tools.yaml"), None),
}


def test_a_miss_whose_parent_is_published_starts_in_the_first_wave() -> None:
    assert fleet.waves(NODES, set(NODES)) == {"base": 1, "tools": 1, "web": 2, "app": 2, "site": 3}
    assert fleet.waves(NODES, {"web", "site", "tools"}) == {"web": 1, "tools": 1, "site": 2}
    assert fleet.waves(NODES, {"site"}) == {"site": 1}
    assert fleet.waves(NODES, set()) == {}


def plan(*waves: tuple[str, int]) -> FleetPlan:
    needed = tuple(
        Needed(n, f"recipes/{n}.yaml", "1.0.0", "docker", f"sha256:{n:0>64}"[-71:], w) for n, w in waves
    )
    return FleetPlan("dir:/r", needed, {"tools": "2.0.0+1"})


def test_github_matrix_is_an_include_list_in_wave_order() -> None:
    p = plan(("base", 1), ("web", 2), ("site", 3))
    matrix = json.loads(fleet.render(p, "github-matrix"))
    assert set(matrix) == {"include"}
    assert [(e["name"], e["wave"]) for e in matrix["include"]] == [("base", 1), ("web", 2), ("site", 3)]
    assert all(isinstance(v, str | int) for e in matrix["include"] for v in e.values())
    assert json.loads(fleet.render(p, "github-matrix", wave=2)) == {"include": [p.needed[1].to_json()]}
    assert json.loads(fleet.render(p, "github-matrix", wave=9)) == {"include": []}


def test_gitlab_child_pipeline_has_a_stage_per_wave() -> None:
    doc = yaml.safe_load(fleet.render(plan(("base", 1), ("web", 2)), "gitlab"))
    assert doc["stages"] == ["wave-1", "wave-2"]
    assert doc["bake web (docker)"]["stage"] == "wave-2"
    assert doc["bake web (docker)"]["script"] == [
        'bake build recipes/web.yaml -t docker --registry "$BAKE_REGISTRY" --json'
    ]
    empty = yaml.safe_load(fleet.render(plan(), "gitlab"))
    assert empty["stages"] == ["nothing"] and "nothing to bake" in empty


def test_json_and_text() -> None:
    p = plan(("base", 1), ("web", 2))
    doc = json.loads(fleet.render(p, "json"))
    assert [[n["name"] for n in w] for w in doc["waves"]] == [["base"], ["web"]]
    assert doc["cached"] == {"tools": "2.0.0+1"}
    text = fleet.render(p, "text")
    assert text.splitlines()[0] == "wave 1:" and "published: tools 2.0.0+1" in text
    with pytest.raises(BakeError, match="unknown format"):
        fleet.render(p, "yaml")
