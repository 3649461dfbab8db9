"""Safe YAML loading that remembers where every value came from.

Recipes are untrusted input. We load them with PyYAML's SafeLoader node graph, refuse
anchors and aliases (the "billion laughs" bomb needs them, and recipes never do), refuse
files over 1 MiB, and record the line and column of every key and value so that an
error deep inside a model can still say ``web.yaml:14:7: steps[2].template.src: …``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bake.errors import RecipeError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64  # nested mappings and sequences: recipes need a handful
# what YAML 1.1's reader refuses (everything but tab, line breaks and printable Unicode)
_UNPRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int
    col: int


@dataclass(frozen=True)
class Source:
    """A loaded YAML document: plain data plus a map from field path to position."""

    path: Path
    data: Any
    positions: Mapping[Loc, Position] = field(default_factory=dict)
    key_positions: Mapping[Loc, Position] = field(default_factory=dict)

    def where(self, loc: Loc, at_key: bool = False) -> Position:
        """The position of the longest known prefix of ``loc`` (its key's, if asked)."""
        if at_key and tuple(loc) in self.key_positions:
            return self.key_positions[tuple(loc)]
        for end in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:end]))
            if pos is not None:
                return pos
        return Position(1, 1)

    def error(self, loc: Loc, message: str, hint: str | None = None, *, at_key: bool = False) -> RecipeError:
        pos = self.where(loc, at_key)
        return RecipeError(f"{self.path}:{pos.line}:{pos.col}: {format_loc(loc)}: {message}", hint)


def format_loc(loc: Loc) -> str:
    """``("steps", 2, "template", "src")`` → ``steps[2].template.src``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def read_text(path: Path, what: str = "file") -> str:
    """Read a small UTF-8 file, refusing oversize files before reading them."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RecipeError(f"{path}: {what} not found", "check the path and its spelling") from None
    if size > MAX_BYTES:
        raise RecipeError(
            f"{path}:1:1: {what} is {size} bytes, over the 1 MiB limit",
            "recipes and the files they reference are small text; keep large data out of them",
        )
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line, col = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise RecipeError(f"{path}:{line}:{col}: {what} is not UTF-8 text ({exc.reason})") from None


def display(path: Path) -> Path:
    """A path as people want to read it: relative to the working folder when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def load_yaml(path: Path) -> Source:
    text = read_text(display(path), "recipe")
    return parse_yaml(text, display(path))


def parse_yaml(text: str, path: Path) -> Source:
    _refuse_unprintable(text, path)
    _refuse_anchors(text, path)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise RecipeError(
            f"{path}:{line}:{col}: (document): invalid YAML: {exc.problem}",
            "check indentation and quoting near that spot",
        ) from None
    except RecursionError:
        raise RecipeError(f"{path}:1:1: (document): nested too deeply (over {MAX_DEPTH} levels)") from None
    positions: dict[Loc, Position] = {}
    keys: dict[Loc, Position] = {}
    data = _build(node, (), positions, keys, path) if node is not None else {}
    return Source(path=path, data=data, positions=positions, key_positions=keys)


class _Loader(yaml.SafeLoader):
    """SafeLoader that stops at MAX_DEPTH nested flow collections: PyYAML's scanner takes
    time quadratic in their depth (`[[[[…` would keep it busy for seconds)."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested too deeply (over {MAX_DEPTH} levels)", self.get_mark()
            )
        super().fetch_flow_collection_start(TokenClass)


def _refuse_unprintable(text: str, path: Path) -> None:
    """YAML allows no control characters but tab and line breaks (PyYAML would fail with
    a traceback-worthy ReaderError rather than a position)."""
    bad = _UNPRINTABLE.search(text)
    if bad is not None:
        before = text[: bad.start()]
        line, col = before.count("\n") + 1, bad.start() - (before.rfind("\n") + 1) + 1
        raise RecipeError(
            f"{path}:{line}:{col}: (document): character U+{ord(bad.group()):04X} is not allowed in YAML",
            "remove it; write it as an escape inside a double-quoted string if it is meant",
        )


def _refuse_anchors(text: str, path: Path) -> None:
    try:
        for event in yaml.parse(text, Loader=_Loader):
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent) or anchor is not None:
                mark = event.start_mark
                line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
                raise RecipeError(
                    f"{path}:{line}:{col}: (document): "
                    f"YAML anchors and aliases are not allowed (&{anchor} / *{anchor})",
                    "write the value out, or share it through `vars:` and Jinja2",
                )
    except (yaml.MarkedYAMLError, RecursionError):
        return  # compose() reports syntax errors with better context


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _build(
    node: yaml.Node,
    loc: Loc,
    positions: dict[Loc, Position],
    keys: dict[Loc, Position],
    path: Path,
) -> Any:
    positions[loc] = _pos(node)
    if len(loc) > MAX_DEPTH:
        p = _pos(node)
        raise RecipeError(
            f"{path}:{p.line}:{p.col}: {format_loc(loc[:3])}…: nested too deeply (over {MAX_DEPTH} levels)"
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                p = _pos(key_node)
                raise RecipeError(
                    f"{path}:{p.line}:{p.col}: {format_loc(loc)}: mapping keys must be plain strings"
                )
            key = str(key_node.value)
            if key in out:
                p = _pos(key_node)
                raise RecipeError(
                    f"{path}:{p.line}:{p.col}: {format_loc((*loc, key))}: duplicate key",
                    "a key may appear once per mapping; remove one of them",
                )
            keys[(*loc, key)] = _pos(key_node)
            out[key] = _build(value_node, (*loc, key), positions, keys, path)
            positions[(*loc, key)] = (
                _pos(key_node)
                if isinstance(value_node, yaml.MappingNode | yaml.SequenceNode)
                else _pos(value_node)
            )
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), positions, keys, path) for i, item in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:  # a tag it does not know (!!python/object …)
        p = _pos(node)
        raise RecipeError(f"{path}:{p.line}:{p.col}: {format_loc(loc)}: {exc.problem}") from None
    finally:
        loader.dispose()
