"""Keys shared by the attestation tests."""

from __future__ import annotations

import pytest

from bake.attest.keys import SigningKey


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def stranger() -> SigningKey:
    return SigningKey.generate()
