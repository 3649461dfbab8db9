"""The JSON Schema of recipes, generated from the models (so it cannot drift from them)."""

from __future__ import annotations

from typing import Any

from bake.recipe.models import Recipe

SCHEMA_ID = "https://bake.invalid/schemas/recipe.schema.json"


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "bake recipe",
        **schema,
    }
