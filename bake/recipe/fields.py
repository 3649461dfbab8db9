"""Field types the recipe models share: names, modes, paths, lists given as one string."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints

NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SEMVER_RE = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
MODE_RE = r"^0?[0-7]{3,4}$"
DIGEST_REF_RE = r"^[^@\s]+@sha256:[0-9a-f]{64}$"
VAR_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"

Name = Annotated[str, StringConstraints(pattern=NAME_RE)]
Mode = Annotated[str, StringConstraints(pattern=MODE_RE)]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
VarName = Annotated[str, StringConstraints(pattern=VAR_NAME_RE)]


def _as_tuple(value: Any) -> Any:
    """A single string where a list is expected (`tags: web`, `notify: restart`)."""
    return (value,) if isinstance(value, str) else value


Strings = Annotated[tuple[NonEmpty, ...], BeforeValidator(_as_tuple)]
