from __future__ import annotations

import pytest

from bake.compile import hcl


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\nlines", '"two\\nlines"'),
        ("tab\there", '"tab\\there"'),
        ("${var.x}", '"$${var.x}"'),
        ("%{ if true }", '"%%{ if true }"'),
        ("$HOME and 100%", '"$HOME and 100%"'),
        ("bell\x07", '"bell\\u0007"'),
        ("ünïcode", '"ünïcode"'),
    ],
)
def test_string_escapes(value: str, expected: str) -> None:
    assert hcl.string(value) == expected


def test_value_and_lists() -> None:
    assert hcl.value(True) == "true"
    assert hcl.value(3) == "3"
    assert hcl.value({"b": "x", "a": [1, "y"]}) == '{"a" = [1, "y"], "b" = "x"}'
    assert hcl.string_list(["a", "${b}"]) == '["a", "$${b}"]'
    with pytest.raises(TypeError):
        hcl.value(object())
