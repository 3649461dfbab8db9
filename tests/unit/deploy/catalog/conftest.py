"""One small real registry per module of catalog tests (building it signs ~20 envelopes)."""

from __future__ import annotations

import pytest

from tests.unit.deploy.catalog.site import Built, build_registry


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_registry(tmp_path_factory.mktemp("catalog-registry"))
