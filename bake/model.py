"""The base of every model parsed from user input: frozen, and strict about unknown keys.

pydantic v2 rather than dataclasses: from one definition it gives strict validation with
the exact location of every error (mapped back to YAML line and column), a JSON Schema for
editors (`bake schema`) and frozen objects. Unknown keys are errors (``extra="forbid"``),
so a misspelt key never silently does nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
