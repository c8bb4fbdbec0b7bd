"""Text from the wire, made safe to show: plain ``Text`` (never markup), control characters escaped."""

from __future__ import annotations

import re
import time
from typing import Any

from rich.text import Text

__all__ = ["clock", "escape", "plain"]

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


def clock(t: Any, millis: bool = True) -> str:
    """Local time of day for a unix time (``online_at``, an entry's ``t``); dashes if it is not one."""
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1e11:
        return "--:--:--.---" if millis else "--:--:--"
    text = time.strftime("%H:%M:%S", time.localtime(t))
    return text + f".{int(t % 1 * 1000):03}" if millis else text
