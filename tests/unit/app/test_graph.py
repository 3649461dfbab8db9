"""The graph scheduler with an injected `work`: order, parallelism, failure handling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bake.app import graph
from bake.errors import BakeError, RecipeError


def nodes(spec: dict[str, str | None]) -> dict[str, graph.Node]:
    return {n: graph.Node(n, Path(f"{n}.yaml"), p) for n, p in spec.items()}


TREE = nodes({"base": None, "web": "base", "app": "base", "web-extra": "web", "other": None})


def test_order_puts_parents_first() -> None:
    order = graph.order(TREE)
    assert order.index("base") < order.index("web") < order.index("web-extra")
    assert order.index("base") < order.index("app")


def test_cycle_is_an_error() -> None:
    with pytest.raises(RecipeError, match="cycle: a → b → a"):
        graph.order(nodes({"a": "b", "b": "a"}))


def test_failed_parent_skips_descendants_while_the_rest_go_on() -> None:
    def work(node: graph.Node) -> graph.NodeResult:
        if node.name == "web":
            raise BakeError("packer failed at step 2")
        return graph.NodeResult(node.name, "built")

    results = {r.name: r for r in graph.run(TREE, work, jobs=2)}
    assert results["web"].status == "failed" and "step 2" in results["web"].detail
    assert results["web-extra"].status == "skipped" and "parent web failed" in results["web-extra"].detail
    assert results["app"].status == "built" and results["other"].status == "built"
    assert graph.summary(list(results.values())) == {"built": 3, "cached": 0, "failed": 1, "skipped": 1}


def test_independent_nodes_run_in_parallel_and_parents_before_children() -> None:
    lock = threading.Lock()
    running: list[str] = []
    peak = [0]
    finished: list[str] = []

    def work(node: graph.Node) -> graph.NodeResult:
        if node.parent is not None:
            assert node.parent in finished
        with lock:
            running.append(node.name)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.05)
        with lock:
            running.remove(node.name)
            finished.append(node.name)
        return graph.NodeResult(node.name, "built")

    graph.run(TREE, work, jobs=3)
    assert peak[0] >= 2
    serial_peak = [0]

    def serial(node: graph.Node) -> graph.NodeResult:
        with lock:
            running.append(node.name)
            serial_peak[0] = max(serial_peak[0], len(running))
        running.remove(node.name)
        return graph.NodeResult(node.name, "cached")

    graph.run(TREE, serial, jobs=1)
    assert serial_peak[0] == 1


def test_discover_reads_a_folder(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nversion: 1.0.0\nbase: {bootstrap: {}}\n")
    (tmp_path / "web.yaml").write_text("name: web\nversion: 1.0.0\nextends: base\n")
    (tmp_path / "ext.yaml").write_text("name: ext\nversion: 1.0.0\nextends: elsewhere\n")
    found = graph.discover(tmp_path)
    assert found["web"].parent == "base" and found["base"].parent is None
    assert found["ext"].parent is None  # a parent outside the folder is baked implicitly
    assert graph.descendants(found, "base") == {"web"}
