"""Text from the wire, made safe to show: plain ``Text`` (never markup), control characters escaped."""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text

__all__ = ["escape", "plain"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0/C1 controls, line separators and bidi overrides: each could move the cursor or reorder a line."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as a visible ``\\xNN`` / ``\\uNNNN`` escape."""
    return _UNSAFE.sub(_escaped, text)


def plain(value: Any, style: str = "") -> Text:
    """A cell or log fragment for a value a client chose (topic, user, event): never parsed as markup."""
    return Text(escape("" if value is None else str(value)), style=style)
