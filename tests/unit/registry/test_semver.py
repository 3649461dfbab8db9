from __future__ import annotations

import pytest

from bake.errors import BakeError
from bake.registry import semver


def test_parse_full_form() -> None:
    v = semver.parse("1.4.0-rc.1+2")
    assert (v.major, v.minor, v.patch) == (1, 4, 0)
    assert v.prerelease == ("rc", "1")
    assert v.build == ("2",)
    assert v.core == "1.4.0-rc.1"
    assert str(v) == "1.4.0-rc.1+2"


@pytest.mark.parametrize(
    "text", ["1.4", "1.4.0.1", "01.4.0", "1.4.0-", "1.4.0+", "1.4.0-01", "", "latest", "1.4.0 "]
)
def test_invalid_versions_are_usage_errors(text: str) -> None:
    with pytest.raises(BakeError, match="not a semantic version") as info:
        semver.parse(text)
    assert info.value.exit_code == 2
    assert info.value.hint and "MAJOR.MINOR.PATCH" in info.value.hint
    assert not semver.is_version(text)


def test_leading_v_gets_a_precise_hint() -> None:
    with pytest.raises(BakeError) as info:
        semver.parse("v1.4.0")
    assert info.value.hint == "drop the leading 'v': 1.4.0"


def test_precedence_follows_the_spec_example() -> None:
    # semver.org section 11, in increasing order.
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.2.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = list(reversed(ordered))
    assert sorted(shuffled, key=lambda t: semver.parse(t).precedence()) == ordered


def test_build_metadata_is_ignored_for_precedence() -> None:
    assert semver.parse("1.4.0+1").precedence() == semver.parse("1.4.0+9").precedence()


def test_build_number() -> None:
    assert semver.build_number(semver.parse("1.4.0")) is None
    assert semver.build_number(semver.parse("1.4.0+12")) == 12
    for bad in ("1.4.0+0", "1.4.0+01", "1.4.0+abc", "1.4.0+1.2"):
        with pytest.raises(BakeError, match="not a build number"):
            semver.build_number(semver.parse(bad))
