"""The web image every deployer test starts from."""

from __future__ import annotations

import pytest

from bake.registry import model
from bake.registry.model import ImageDoc
from tests.unit.deploy.docs import at, build, release


@pytest.fixture
def web() -> ImageDoc:
    doc = build(
        model.new_image_doc("web"),
        release("web", "1.3.0", "a"),
        release("web", "1.4.0", "b"),
        release("web", "1.4.0", "c"),
        release("web", "1.5.0", "t", ref="r.example/web:1.5.0"),
    )
    return model.promote(doc, "1.4.0+1", "stable", at=at(1))
