"""One escaping function for every sink a person reads: terminals, the dashboard, server logs.

A client chooses topics, events, payloads and (through the token it was given) user ids; printed
raw, a newline forges a log line, an ANSI escape recolours or moves the cursor, a bidi override
reorders what an operator reads. :func:`escape` makes each such character visible instead.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["escape", "shown"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0/C1 controls, line separators and bidi overrides: each could move the cursor or reorder a line."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x20 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as a visible escape: ``\\xNN`` for C0 (which
    JSON encoders escape already) and ``\\uNNNN`` for the rest, so that a JSON line stays valid JSON
    that decodes to the same string."""
    return _UNSAFE.sub(_escaped, text)


def shown(value: Any) -> str:
    """A value a client chose, as a log line may carry it: ``str()``, then :func:`escape`."""
    return escape(value if isinstance(value, str) else str(value))
