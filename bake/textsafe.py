"""Text that reaches a terminal, a log or an error message: no control sequences, no
passwords, no unbounded free text.

Registry documents, tool output and error messages can carry text someone else wrote (a
revocation reason, a registry's error body, a tool's stderr). Printed raw, ``ESC]0;…``
retitles the terminal, ``ESC[2J`` clears it and a newline forges an extra line of output.
Everything the CLI prints goes through :func:`for_terminal`; a free-text field is
rendered with :func:`one_line`, which also escapes newlines and caps its length. URLs are
printed without their password (:func:`hide_credentials`). Pure, and cheap to import.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
FREE_TEXT_LIMIT = 300  # characters of a free-text field (a revocation reason) in text output

# C0 controls but newline and tab, DEL, C1 controls; Unicode's bidirectional overrides and
# isolates and the line/paragraph separators (they reorder or split what a reader sees)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_CONTROLS_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# scheme://user:password@ — the password part (up to the @ that ends the userinfo)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:'\"]*):[^\s/'\"]*@")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape
    (``\\x1b``), and URL passwords redacted."""
    return hide_credentials(_CONTROLS.sub(_escape, text))


def one_line(text: str, limit: int = FREE_TEXT_LIMIT) -> str:
    """A free-text field as one line: newlines and tabs escaped too, at most ``limit``
    characters (an ellipsis says something was cut)."""
    flat = _CONTROLS_ALL.sub(_escape, text)
    return flat if len(flat) <= limit else flat[: max(limit - 1, 0)] + "…"


def hide_credentials(text: str) -> str:
    """``oci://user:secret@host`` → ``oci://user:<redacted>@host`` wherever it occurs."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
