"""bake.deploy.catalog.pictures: the lineage graph and the channel timeline."""

from __future__ import annotations

from bake.deploy.catalog.pictures import MAX_CHILDREN, children_index, lineage, parents_of, timeline
from bake.registry import model
from tests.unit.deploy.docs import at, build, release


def test_lineage_puts_ancestors_left_and_children_right() -> None:
    parents = {"web": ["base"], "base": ["root"], "app": ["web"], "api": ["web"]}
    g = lineage("web", parents, children_index(parents))
    columns: dict[int, list[str]] = {}
    for n in g.nodes:
        columns.setdefault(n.x, []).append(n.title)
    assert [sorted(c) for _x, c in sorted(columns.items())] == [["root"], ["base"], ["web"], ["api", "app"]]
    assert [n.title for n in g.nodes if n.current] == ["web"]
    assert len(g.edges) == 4  # root→base, base→web, web→app, web→api


def test_lineage_cuts_a_wide_fan_out() -> None:
    parents = {f"c{i:02d}": ["base"] for i in range(MAX_CHILDREN + 5)}
    g = lineage("base", parents, children_index(parents))
    more = [n for n in g.nodes if n.name is None]
    assert [n.label for n in more] == ["+5 more"]
    assert len(g.nodes) == MAX_CHILDREN + 2


def test_lineage_survives_a_cycle() -> None:
    parents = {"a": ["b"], "b": ["a"]}
    g = lineage("a", parents, children_index(parents))
    assert {n.title for n in g.nodes} == {"a", "b"}


def test_parents_of_counts_builds() -> None:
    doc = build(model.new_image_doc("web"), release("web", "1.0.0", "a"))
    doc = model.ImageDoc(
        "web",
        {k: model.Build(**{**b.__dict__, "parent": "base@1.0.0+1"}) for k, b in doc.versions.items()},
    )
    assert parents_of(doc) == ["base"]


def test_timeline_orders_moves_and_shares_instants() -> None:
    doc = build(model.new_image_doc("web"), release("web", "1.0.0", "a"), release("web", "1.1.0", "b"))
    doc = model.promote(doc, "1.0.0+1", "stable", at=at(0))
    doc = model.promote(doc, "1.1.0+1", "beta", at=at(0))
    doc = model.promote(doc, "1.1.0+1", "stable", at=at(60 * 24 * 30))
    doc = model.rollback(doc, "stable", at=at(60 * 24 * 30 + 1))
    t = timeline(doc)
    assert t is not None and [r.channel for r in t.rows] == ["beta", "stable"]
    beta, stable = t.rows
    assert beta.marks[0].x == stable.marks[0].x  # the same instant, the same place
    xs = [m.x for m in stable.marks]
    assert xs == sorted(xs) and len(set(xs)) == 3  # a month and a minute apart, both visible
    assert [m.action for m in stable.marks] == ["promote", "promote", "rollback"]
    assert timeline(model.new_image_doc("x")) is None
