"""Text from the wire, made safe to show: plain ``Text`` (never markup), control characters escaped."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from chanctl.escape import escape

__all__ = ["clock", "escape", "expires", "plain", "span"]


def plain(value: Any, style: str = "") -> Text:
    """A cell or log fragment for a value a client chose (topic, user, event): never parsed as markup."""
    return Text(escape("" if value is None else str(value)), style=style)


def clock(t: Any, millis: bool = True) -> str:
    """Local time of day for a unix time (``online_at``, an entry's ``t``); dashes if it is not one."""
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1e11:
        return "--:--:--.---" if millis else "--:--:--"
    text = time.strftime("%H:%M:%S", time.localtime(t))
    return text + f".{int(t % 1 * 1000):03}" if millis else text


def span(seconds: float) -> str:
    """A length of time as ``M:SS`` or ``H:MM:SS`` (an uptime, a time to expiry); never negative."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def expires(expires_at: Any, now: float) -> str:
    """Time left on a socket's token (the admin plane's ``expires_at``, unix seconds): ``-`` for a
    socket without a token (or a value that is not a time), ``expired`` once it ran out."""
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        return "-"
    return span(expires_at - now) if expires_at > now else "expired"
