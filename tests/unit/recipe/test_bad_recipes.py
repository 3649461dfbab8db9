"""Every bad recipe in tests/fixtures/bad fails with the message its first line expects.

A fixture's first line reads `# expect: TEXT | HINT`: TEXT must appear in the error
message (which starts with FILE:LINE:COL), HINT (optional) in the hint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bake.errors import RecipeError
from bake.recipe.load import resolve_targets

BAD = Path(__file__).resolve().parents[2] / "fixtures" / "bad"
CASES = sorted(p for p in BAD.glob("*.yaml") if not p.name.startswith("ok-"))


def expectation(path: Path) -> tuple[str, str | None]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: …'"
    text, _, hint = first.removeprefix("# expect: ").partition(" | ")
    return text.strip(), hint.strip() or None


def test_there_are_at_least_twenty_bad_recipes() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_recipe_is_refused_with_its_message(path: Path) -> None:
    text, hint = expectation(path)
    with pytest.raises(RecipeError) as info:
        resolve_targets(path)
    assert info.value.exit_code == 2
    assert text in info.value.message
    if hint is not None:
        assert info.value.hint is not None and hint in info.value.hint


def test_oversize_recipe_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(RecipeError, match=r"big.yaml:1:1: recipe is \d+ bytes, over the 1 MiB limit"):
        resolve_targets(path)


def test_oversize_referenced_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\0" * ((1 << 20) + 1))
    (tmp_path / "base.yaml").write_text("name: base\nversion: 1.0.0\nbase: {bootstrap: {}}\n")
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\nversion: 1.0.0\nextends: base\nsteps:\n  - copy: {src: blob.bin, dest: /blob}\n"
    )
    with pytest.raises(RecipeError, match=r"r.yaml:5:17: steps\[0\].copy.src: .* over the 1 MiB limit"):
        resolve_targets(path)
