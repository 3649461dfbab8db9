"""Shared fixtures: paths to the example recipes and fixture folders."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def recipes() -> Path:
    return RECIPES


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
