"""HCL2 literals for generated Packer templates.

Every value from a recipe goes through :func:`string` before it lands in a template, so a
quote, backslash, newline or template sequence (``${`` / ``%{``) in user input can never
change the template's structure or be evaluated by Packer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def string(value: str) -> str:
    """A double-quoted HCL string whose value is exactly ``value``."""
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        nxt = value[i + 1] if i + 1 < len(value) else ""
        if ch in "$%" and nxt == "{":
            out.append(ch * 2 + "{")  # $${ and %%{ are HCL's literal ${ and %{
            i += 2
            continue
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
        i += 1
    return '"' + "".join(out) + '"'


def string_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(string(v) for v in values) + "]"


def value(v: object) -> str:
    """An HCL literal for a JSON-like value (strings escaped, numbers and bools as is)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, Mapping):
        inner = ", ".join(f"{string(str(k))} = {value(x)}" for k, x in sorted(v.items()))
        return "{" + inner + "}"
    if isinstance(v, Iterable):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"no HCL literal for {type(v).__name__}")


def json_string(v: object) -> str:
    """A JSON document as an HCL string (for Docker `changes` such as ENTRYPOINT [...])."""
    return string(json.dumps(v, separators=(", ", ": ")))
