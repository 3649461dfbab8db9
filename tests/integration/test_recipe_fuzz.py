"""Fuzzing the recipe loader with Hypothesis: random YAML, random structural and textual
mutations of the example recipes, and random bytes give a valid plan or an error that
names FILE:LINE:COL — never a traceback — in bounded time and memory.

Each case goes as far as a recipe can without a tool: load, validate, vars, `when`, files,
the plan of every target the recipe declares and its rendered Packer template. The budget
is fixed (BAKE_FUZZ_SECONDS, default 60 s: CI runs it with the integration tests; the
examples are random, so each run explores anew and prints a reproducible seed on failure).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bake.compile.template import compile_plan
from bake.errors import BakeError
from bake.infra import packer
from bake.plan import plan_recipe
from tests.conftest import RECIPES

pytestmark = pytest.mark.integration

BUDGET = float(os.environ.get("BAKE_FUZZ_SECONDS", "60"))
SHARES = {"structural": 0.45, "textual": 0.35, "random_yaml": 0.12, "raw": 0.08}
PER_CASE_SECONDS = 15.0  # one case, on a loaded 2-core machine; a render is capped at 5 s
MAX_GROWTH_KIB = 512 << 10  # what all cases together may add to the process's peak memory
LOCATED = re.compile(r"^\S[^\n]*?:\d+:\d+: ")
EXAMPLES = {p.name: p.read_text(encoding="utf-8") for p in sorted(RECIPES.glob("*.yaml"))}
KEYS = ["name", "version", "description", "base", "extends", "vars", "secrets", "targets", "steps",
        "verify", "volatile", "bootstrap", "image", "packages", "file", "shell", "when", "env",
        "docker", "qemu", "service", "command", "testinfra", "port", "user", "dest", "src"]  # fmt: skip
SETTINGS = settings(
    deadline=None,  # time is checked per case below, with room for a loaded machine
    database=None,  # nothing written into the checkout
    suppress_health_check=list(HealthCheck),
    max_examples=20,  # one run; test_fuzz runs again until its share of the budget is spent
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example recipes and their files, with room for one more."""
    target = tmp_path_factory.mktemp("fuzz") / "recipes"
    shutil.copytree(RECIPES, target)
    return target


@pytest.fixture(scope="module", autouse=True)
def memory_bound() -> Iterator[None]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < MAX_GROWTH_KIB, f"the fuzzed cases grew the peak memory by {grown >> 10} MiB"


def outcome(folder: Path, data: str | bytes) -> str:
    """'ok', or the located error message; anything else fails the test."""
    path = folder / "fuzz.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    started = time.monotonic()
    try:
        for plan in plan_recipe(path, packer.DEFAULT, search_path=[folder]):
            compile_plan(plan)
        result = "ok"
    except BakeError as exc:
        assert LOCATED.match(exc.message), f"an error without FILE:LINE:COL: {exc.message!r}"
        result = exc.message
    elapsed = time.monotonic() - started
    assert elapsed < PER_CASE_SECONDS, f"took {elapsed:.1f}s: {data[:300]!r}"
    return result


# --------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "{{ x }}",
            "{{ target }}",
            "{% for i in range(3) %}{{ i }}{% endfor %}",
            "{{",
            "}}",
            "{{ 1/0 }}",
            "{{ 'a' * 99999999 }}",
            "1.0.0",
            "bookworm",
            "/etc/x",
            "0644",
            "sha256:" + "0" * 64,
            "debian-base",
            "{{ range(10**9)|list }}",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), inner, max_size=5),
    ),
    max_leaves=25,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


@st.composite
def structural(draw: st.DrawFn) -> str:
    """An example recipe with values replaced, removed or added anywhere in its tree."""
    doc = yaml.safe_load(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from([p for p in paths(doc) if p]))
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(values)
        else:
            parent[where[-1]] = draw(values)
    return yaml.safe_dump(
        doc, allow_unicode=True, default_flow_style=draw(st.sampled_from([False, None, True]))
    )


@st.composite
def textual(draw: st.DrawFn) -> str:
    """An example recipe's text with characters, lines and indentation edited."""
    text = EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))]
    for _ in range(draw(st.integers(1, 5))):
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        kind = draw(st.sampled_from(["chars", "drop", "repeat", "indent", "swap"]))
        if kind == "chars":
            at = draw(st.integers(0, len(text)))
            cut = draw(st.integers(0, 8))
            text = text[:at] + draw(st.text(max_size=8)) + text[at + cut :]
            continue
        if kind == "drop":
            del lines[i]
        elif kind == "repeat":
            lines[i:i] = [lines[i]] * draw(st.integers(1, 3))
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip(" ")
        elif kind == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        text = "".join(lines)
    return text


@st.composite
def random_yaml(draw: st.DrawFn) -> str:
    doc = draw(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), values, max_size=8))
    return yaml.safe_dump(
        doc, allow_unicode=True, default_flow_style=draw(st.sampled_from([False, None, True]))
    )


# --------------------------------------------------------------------------- the tests

EXPECTED = {
    "flow-depth": "nested too deeply",
    "block-depth": "nested too deeply",
    "control-char": "character U+0007 is not allowed",
    "python-tag": "could not determine a constructor",
    "null-module": "`packages` needs a value",
    "null-check": "`package` needs a value",
    "no-parent": "extends: parent recipe `nothing-like-it` not found",
    "big-string": "over the limit",
    "big-filter": "too large an argument",
    "big-power": "too large a number",
    "big-range": "too large an argument",
    "exceptions": "ZeroDivisionError",
    "loop-range": "loops of over",
    "loop-string": "seconds to render",
}
KNOWN = {
    "flow-depth": "[" * 5000 + "]" * 5000,  # PyYAML's scanner is quadratic in flow depth
    "block-depth": "a:\n" + "".join(" " * i + "- \n" for i in range(1, 1200)),  # compose() recurses
    "control-char": "name: x\x07\nversion: 1.0.0\n",  # PyYAML's ReaderError
    "python-tag": "name: !!python/object:os.system x\n",
    "null-module": "{name: w, version: 1.0.0, base: {bootstrap: {}}, steps: [{packages: null}]}",
    "null-check": "{name: w, version: 1.0.0, base: {bootstrap: {}}, verify: [{package: null}]}",
    "no-parent": "{name: w, version: 1.0.0, extends: nothing-like-it}",
    "big-string": "{{ 'a' * 10**9 }}",
    "big-filter": "{{ 'x'|center(999999999) }}",
    "big-power": "{{ 10 ** 99999999 }}",
    "big-range": "{{ range(10**9)|list }}",
    "exceptions": "{{ 1/0 }}{{ [][1] }}",
    "loop-range": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "loop-string": "{% for i in 'x'*999999 %}{% for j in 'x'*999999 %}{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_cases(folder: Path, name: str) -> None:
    """What earlier fuzzing found (tracebacks, errors without a position, hangs), kept."""
    text = KNOWN[name]
    if text.startswith(("{{", "{%")):
        recipe = {"name": "w", "version": "1.0.0", "base": {"bootstrap": {}}, "description": text}
        text = yaml.safe_dump(recipe)
    message = outcome(folder, text)
    assert message != "ok" and EXPECTED[name] in message, message


def test_not_utf8(folder: Path) -> None:
    assert (
        outcome(folder, b"name: web\n\xd9")
        == f"{folder / 'fuzz.yaml'}:2:1: recipe is not UTF-8 text (unexpected end of data)"
    )


@pytest.mark.parametrize("strategy", sorted(SHARES))
def test_fuzz(folder: Path, strategy: str) -> None:
    """Runs of a few random cases each, again and again, until the strategy's share of
    the budget is spent."""
    cases = {"structural": structural(), "textual": textual(), "random_yaml": random_yaml(),
             "raw": st.binary(max_size=400)}[strategy]  # fmt: skip

    @given(case=cases)
    @SETTINGS
    def run(case: str | bytes) -> None:
        outcome(folder, case)

    end, runs = time.monotonic() + BUDGET * SHARES[strategy], 0
    while time.monotonic() < end or not runs:
        run()
        runs += 1


def test_the_examples_themselves_plan(folder: Path) -> None:
    for name, text in EXAMPLES.items():
        assert outcome(folder, text) == "ok", name
