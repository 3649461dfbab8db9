"""The JSON Schema of recipes, generated from the models (so it cannot drift from them).

`targets:` is validated by each target plug-in's own config model, so its schema is put
together here from the plug-in table: one property per target, each the schema of its
config model (`$defs`), nothing else allowed.
"""

from __future__ import annotations

from typing import Any

from bake import targets
from bake.recipe.models import Recipe

SCHEMA_ID = "https://bake.invalid/schemas/recipe.schema.json"
REF_TEMPLATE = "#/$defs/{model}"


def targets_schema(defs: dict[str, Any]) -> dict[str, Any]:
    """The `Targets` definition; each config model's schema is added to ``defs``."""
    properties: dict[str, Any] = {}
    for name in targets.names():
        model = targets.get(name).config
        schema = model.model_json_schema(by_alias=True, mode="validation", ref_template=REF_TEMPLATE)
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
        properties[name] = {"anyOf": [{"$ref": REF_TEMPLATE.format(model=model.__name__)}, {"type": "null"}]}
    return {"additionalProperties": False, "properties": properties, "title": "Targets", "type": "object"}


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True, mode="validation", ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs["Targets"] = targets_schema(defs)
    schema["properties"]["targets"] = {"$ref": REF_TEMPLATE.format(model="Targets")}
    schema["$defs"] = dict(sorted(defs.items()))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "bake recipe",
        **schema,
    }
