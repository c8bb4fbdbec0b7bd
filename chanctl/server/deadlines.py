"""Deadlines: every socket's timeouts on a few loop timers.

Each socket has an idle deadline (``server.idle_timeout``) and a token deadline (its session's
warning, then its expiry). One ``loop.call_at`` each made two TimerHandles per socket, each with a
copied context and a bound method (some 0.45 KiB and six objects the collector walks, per idle
socket), and every call pushed onto asyncio's heap through a Python-level comparison per level:
about 30,000 instructions of a connect (issue 15, callgrind). Here a deadline falls into a bucket of
:data:`RESOLUTION` seconds and each bucket has one loop timer: adding or dropping a deadline is a
dict operation. A deadline is met at most one resolution late, never early; what it does is the
target's business (the idle check re-arms itself if the socket spoke meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["RESOLUTION", "Deadline", "Deadlines"]

log = logging.getLogger("chanctl.deadlines")

RESOLUTION = 0.05
"""Seconds per bucket: how late a deadline may be met. Timeouts are seconds to hours; 50 ms keeps
them to the tenth of the shortest a test sets, with one loop timer per 50 ms of deadlines."""


class Deadline(Protocol):
    def deadline_passed(self) -> None:
        """The deadline this object was added with has passed (called once per :meth:`Deadlines.add`)."""


class Deadlines:
    """Buckets of deadlines by loop time, one ``call_at`` per bucket.

    Args:
        resolution: seconds per bucket.
    """

    def __init__(self, resolution: float = RESOLUTION):
        self._resolution = resolution
        self._buckets: dict[int, dict[Deadline, None]] = {}

    def add(self, when: float, target: Deadline) -> int:
        """Call ``target.deadline_passed()`` once the loop's time passes ``when`` (at most one
        resolution later); returns the key that :meth:`drop` takes. One deadline per target and key."""
        key = int(when / self._resolution) + 1  # the first bucket boundary after ``when``
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            asyncio.get_running_loop().call_at(key * self._resolution, self._fire, key)
        bucket[target] = None
        return key

    def drop(self, key: int, target: Deadline) -> None:
        """Forget ``target``'s deadline added under ``key`` (a no-op once it has passed)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(target, None)

    def __len__(self) -> int:
        """Deadlines waiting, over every bucket."""
        return sum(map(len, self._buckets.values()))

    def _fire(self, key: int) -> None:
        bucket = self._buckets.pop(key, None)
        if not bucket:
            return
        for target in bucket:
            try:
                target.deadline_passed()
            except Exception:  # one socket's failure must not cost the others their deadlines
                log.exception("a deadline's action failed")
