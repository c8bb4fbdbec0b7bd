"""Text from the wire, made safe to show: plain ``Text`` (never markup), control characters escaped."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from chanctl.escape import escape

__all__ = ["clock", "escape", "plain"]


def plain(value: Any, style: str = "") -> Text:
    """A cell or log fragment for a value a client chose (topic, user, event): never parsed as markup."""
    return Text(escape("" if value is None else str(value)), style=style)


def clock(t: Any, millis: bool = True) -> str:
    """Local time of day for a unix time (``online_at``, an entry's ``t``); dashes if it is not one."""
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1e11:
        return "--:--:--.---" if millis else "--:--:--"
    text = time.strftime("%H:%M:%S", time.localtime(t))
    return text + f".{int(t % 1 * 1000):03}" if millis else text
