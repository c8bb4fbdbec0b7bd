"""A log filter that bounds how many lines one kind of message may write.

Some log lines are written per client message: a rule that fails at run time ("rule ... denied:
RuntimeError: Undefined variable"), a ``push_to`` whose destination cannot be computed. Each is
news to the operator the first few times and noise after that, and a client that repeats the message
decides how much the server writes to its log (bounded only by the rate limit, which a deployment
may switch off). :class:`LogThrottle` lets each message template through ``burst`` times per
``period`` seconds, drops the rest, and says how many it dropped on the next line it lets through.

A call may name what it is about with ``extra={"throttle": key}`` (a rule's source, from the
config): each rule then has its own budget, so one noisy rule cannot hide another's first failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_KINDS", "LogThrottle"]

MAX_KINDS = 1024
"""Kinds of line one throttle remembers."""


@dataclass
class _Window:
    start: float
    written: int = 0
    dropped: int = 0


class LogThrottle(logging.Filter):
    """Per kind of line (the ``throttle`` extra, else the message template before its arguments): at
    most ``burst`` records in any ``period`` seconds; the first record let through after a drop ends
    with how many were dropped.

    Kinds are the code's templates and the config's text, never a client's; the table still keeps
    at most ``MAX_KINDS`` (the oldest goes first), as a config may hold many rules.
    """

    def __init__(self, burst: int = 10, period: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst = burst
        self.period = period
        self.clock = clock
        self._windows: dict[tuple[object, object], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        kind = (record.msg, getattr(record, "throttle", None))
        window = self._windows.get(kind)
        if window is None or now - window.start >= self.period:
            dropped = 0 if window is None else window.dropped
            if window is None and len(self._windows) >= MAX_KINDS:
                del self._windows[next(iter(self._windows))]
            window = self._windows[kind] = _Window(now)
            if dropped:
                record.msg = f"{record.msg} (and {dropped} more like it in the last {self.period:g} s, not logged)"
        if window.written >= self.burst:
            window.dropped += 1
            return False
        window.written += 1
        return True
