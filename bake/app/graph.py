"""`bake build --all DIR`: every recipe of a folder, parents first, independent ones in
parallel, nothing baked twice.

Recipes form a graph by `extends`. A node starts when its parent finished good (built or
cached); a failed node skips its descendants while the rest go on. Whether a node needs a
bake at all is decided by its bake key before any process starts: a key the registry (or
the local state) already holds as good is "cached". The scheduler is pure over two
injected callables, so its logic is unit-tested without Packer.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bake.errors import BakeError, RecipeError
from bake.recipe.load import load_doc


@dataclass(frozen=True)
class Node:
    name: str
    path: Path
    parent: str | None  # a recipe of the same folder, or None (a base, or an outside parent)


@dataclass(frozen=True)
class NodeResult:
    name: str
    status: str  # built | cached | failed | skipped
    seconds: float = 0.0
    version: str = ""
    detail: str = ""  # image, registry version, error or reason
    extra: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "version": self.version,
            "detail": self.detail,
            **dict(self.extra),
        }


def discover(folder: Path) -> dict[str, Node]:
    """The recipes of `folder` (*.yaml with a `name`), by name."""
    nodes: dict[str, Node] = {}
    for path in sorted(folder.glob("*.yaml")):
        doc = load_doc(path)
        if doc.name in nodes:
            raise RecipeError(f"{path}: recipe name {doc.name!r} is also used by {nodes[doc.name].path}")
        nodes[doc.name] = Node(doc.name, path, doc.extends)
    if not nodes:
        raise BakeError(f"no recipes (*.yaml) in {folder}")
    return {n: Node(v.name, v.path, v.parent if v.parent in nodes else None) for n, v in nodes.items()}


def order(nodes: Mapping[str, Node]) -> list[str]:
    """Parents before children; a cycle is an error that prints it."""
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name) :], name]
            raise RecipeError(f"`extends` forms a cycle: {' → '.join(cycle)}")
        state[name] = 1
        parent = nodes[name].parent
        if parent is not None:
            visit(parent, (*stack, name))
        state[name] = 2
        out.append(name)

    for name in sorted(nodes):
        visit(name, ())
    return out


def descendants(nodes: Mapping[str, Node], name: str) -> set[str]:
    out: set[str] = set()
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for n in nodes.values():
            if n.parent == current and n.name not in out:
                out.add(n.name)
                frontier.append(n.name)
    return out


Work = Callable[[Node], NodeResult]


def run(
    nodes: Mapping[str, Node],
    work: Work,
    jobs: int = 1,
    on_done: Callable[[NodeResult], None] | None = None,
) -> list[NodeResult]:
    """Run `work` for every node, parents first, up to `jobs` at once."""
    todo = order(nodes)
    results: dict[str, NodeResult] = {}
    running: dict[cf.Future[NodeResult], str] = {}

    def finish(result: NodeResult) -> None:
        results[result.name] = result
        if on_done is not None:
            on_done(result)

    with cf.ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="bake") as pool:
        while todo or running:
            for name in list(todo):
                if len(running) >= max(1, jobs):
                    break
                parent = nodes[name].parent
                if parent is not None and parent not in results:
                    continue  # parent still running or waiting
                todo.remove(name)
                if parent is not None and results[parent].status not in ("built", "cached"):
                    finish(NodeResult(name, "skipped", detail=f"parent {parent} {results[parent].status}"))
                    continue
                running[pool.submit(_guarded, work, nodes[name])] = name
            if not running:
                continue
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                finish(fut.result())
    return [results[n] for n in order(nodes)]


def _guarded(work: Work, node: Node) -> NodeResult:
    start = time.monotonic()
    try:
        return work(node)
    except BakeError as exc:
        return NodeResult(node.name, "failed", time.monotonic() - start, detail=exc.message.splitlines()[0])


def summary(results: Sequence[NodeResult]) -> dict[str, int]:
    counts = {"built": 0, "cached": 0, "failed": 0, "skipped": 0}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
