"""The shape the code keeps: a thin CLI over the application layer, targets as plug-ins.

Read from the source with `ast` (and a grep for target names), so a change that breaks the
shape fails here with the file and line, not in a review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

BAKE = ROOT / "bake"


def modules(folder: str) -> list[Path]:
    return sorted((BAKE / folder).glob("*.py"))


def imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_no_cli_module_imports_another() -> None:
    for path in modules("cli"):
        if path.name == "__init__.py":
            continue  # mounts the command modules on the app: the one place that names them
        others = sorted(m for m in imported(path) if m.startswith("bake.cli"))
        assert others == [], f"{path.relative_to(ROOT)} imports {others}"


def test_no_any_in_cli_or_application_signatures() -> None:
    for path in [*modules("cli"), *modules("app")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            annotations = [a.annotation for a in args if a.annotation] + (
                [node.returns] if node.returns else []
            )
            names = {n.id for a in annotations for n in ast.walk(a) if isinstance(n, ast.Name)}
            assert "Any" not in names, (
                f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} takes or returns Any"
            )


def test_the_core_does_not_depend_on_the_cli_or_the_application_layer() -> None:
    for folder in ("recipe", "compile", "targets", "verify", "attest", "registry", "deploy", "infra"):
        for path in sorted((BAKE / folder).rglob("*.py")):
            upward = sorted(m for m in imported(path) if m.startswith(("bake.cli", "bake.app")))
            assert upward == [], f"{path.relative_to(ROOT)} imports {upward}"


TARGET_BRANCH = re.compile(r"""target ?== ?['"](docker|qemu)|== ?['"]qcow2""")


def test_only_a_target_asks_which_target_it_is() -> None:
    found = []
    for path in sorted(BAKE.rglob("*.py")):
        if path.is_relative_to(BAKE / "targets" / "docker") or path.is_relative_to(BAKE / "targets" / "qemu"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TARGET_BRANCH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


# Not run by bake: copied beside the generated checks, it runs in their pytest child
# (which imports nothing of bake) as testinfra's bake-docker:// backend.
CHILD_ONLY = {"verify/shell_backend.py"}


def test_one_subprocess_gateway() -> None:
    users = [p.relative_to(BAKE).as_posix() for p in BAKE.rglob("*.py") if "subprocess" in imported(p)]
    assert [p for p in users if p not in CHILD_ONLY] == ["infra/process.py"]


def test_the_child_only_backend_imports_nothing_of_bake() -> None:
    for rel in CHILD_ONLY:
        assert not any(m == "bake" or m.startswith("bake.") for m in imported(BAKE / rel)), rel
