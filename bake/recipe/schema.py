"""The JSON Schema of recipes, generated from the models (so it cannot drift from them).

`targets:` is validated by each target plug-in's own config model, so its schema is put
together here from the plug-in table: one property per target, each the schema of its
config model (`$defs`), nothing else allowed.

The models check values after Jinja2 rendering; editors check the recipe as written. So
wherever a recipe may hold a template (every field but ``name``, ``version``, ``extends``,
``vars`` and ``secrets``), a value the models constrain (a pattern, an enum, an integer or a
boolean) also accepts a string holding ``{{ … }}`` or ``{% … %}``: ``port: "{{ port }}"``
and ``path: "{{ root }}/index.html"`` validate here as they do in ``bake validate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bake import targets
from bake.recipe.load import SKIP_RENDER
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


TEMPLATE: dict[str, Any] = {
    "description": "a Jinja2 template; its rendered value is checked by `bake validate`",
    "pattern": r"\{\{|\{%",
    "type": "string",
}
_CONSTRAINTS = ("pattern", "enum", "const", "format", "minimum", "maximum", "minLength", "maxLength")
_META = ("title", "description", "default", "examples")
# top-level fields that are never rendered (SKIP_RENDER), and the models only they use
_NOT_RENDERED = frozenset(path[0] for path in SKIP_RENDER)
_NOT_RENDERED_DEFS = frozenset({"Secret"})


def _constrained(node: Mapping[str, Any]) -> bool:
    """A scalar schema that a template string would fail."""
    kind = node.get("type")
    if kind in ("integer", "number", "boolean"):
        return True
    return kind in ("string", None) and any(k in node for k in _CONSTRAINTS) and "$ref" not in node


def accept_templates(node: Any) -> Any:
    """*node* with every constrained scalar schema also accepting :data:`TEMPLATE`."""
    if isinstance(node, list):
        return [accept_templates(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "anyOf" in node and isinstance(node["anyOf"], list):
        items = [accept_templates(i) if not _constrained(i) else i for i in node["anyOf"]]
        if any(isinstance(i, dict) and _constrained(i) for i in items):
            items.append(TEMPLATE)
        return {**{k: accept_templates(v) for k, v in node.items() if k != "anyOf"}, "anyOf": items}
    if _constrained(node):
        meta = {k: node[k] for k in _META if k in node}
        return {**meta, "anyOf": [{k: v for k, v in node.items() if k not in _META}, TEMPLATE]}
    return {k: accept_templates(v) if k not in ("required", "enum", "const") else v for k, v in node.items()}


def _with_templates(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema["properties"]
    schema["properties"] = {k: v if k in _NOT_RENDERED else accept_templates(v) for k, v in props.items()}
    defs = schema["$defs"]
    schema["$defs"] = {k: v if k in _NOT_RENDERED_DEFS else accept_templates(v) for k, v in defs.items()}
    return schema


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True, mode="validation", ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs["Targets"] = targets_schema(defs)
    schema["properties"]["targets"] = {"$ref": REF_TEMPLATE.format(model="Targets")}
    schema["$defs"] = dict(sorted(defs.items()))
    schema = _with_templates(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "bake recipe",
        **schema,
    }
