"""Freed memory handed back to the operating system after sockets close.

A burst of connections or of large frames grows the C heap. When they end, glibc's ``free`` keeps
the freed chunks for reuse, and since live objects sit between them the heap's top cannot shrink:
RSS stays at the burst's high-water mark for the life of the process. In issue 15's fuzz campaign
(20,000 hostile frames, 32 sockets at a time) RSS ended 10 MiB above its baseline with every
fuzz socket gone; a ``malloc_trim(0)`` then brought it back to within 0.7 MiB, so all of it was
free memory, not a leak. A server in a container with a memory limit, or an operator watching RSS,
cannot tell the two apart, so the server trims: ``server.memory_trim`` seconds after the first
close since the last trim, one ``malloc_trim(0)`` gives every whole free page back (``madvise``).
A churning server trims at most that often and an idle one never. It costs 0.1-0.13 ms per MiB
given back (a burst that freed 350 MiB stalls the loop once for some 45 ms) and about 2.4 ms to
walk a 400 MiB heap with nothing to give (benchmarks/README.md, "Memory trim"). It runs on the
loop, between two callbacks: in a thread it would gain little, as glibc holds the heap's lock
while it trims and every frame the loop reads meanwhile needs that heap.

Python's own small-object arenas go back to the system when they empty; this is for the rest
(frames, buffers, large strings and containers). Where the C library has no ``malloc_trim``
(musl, macOS) nothing is trimmed and nothing is counted.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CAN_TRIM", "MemoryTrim", "TrimStats", "resident_bytes"]

log = logging.getLogger("chanctl.memory")


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (AttributeError, OSError, TypeError):  # no such symbol; no dlopen(NULL) (Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_MALLOC_TRIM = _find_malloc_trim()
CAN_TRIM = _MALLOC_TRIM is not None
"""Whether this C library has ``malloc_trim`` (glibc); elsewhere ``server.memory_trim`` does nothing."""
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's RSS, from ``/proc`` (None where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return None


@dataclass
class TrimStats:
    """What the trims did, for ``/metrics``."""

    trims: int = 0
    returned_bytes: int = 0
    """RSS given back, as the process's RSS fell across each trim."""
    seconds: float = 0.0
    """Time the trims took, all of it on the event loop."""


class MemoryTrim:
    """Schedules one ``malloc_trim(0)`` ``delay`` seconds after the first close since the last.

    Args:
        delay: seconds from a close to the trim; None never trims.
        stats: where the trims are counted.
    """

    def __init__(self, delay: float | None, stats: TrimStats):
        self.stats = stats
        self._delay = delay if _MALLOC_TRIM is not None else None
        self._pending: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """A trim is scheduled."""
        return self._pending is not None

    def connection_closed(self) -> None:
        """A connection ended: what it held is free now, to be given back once the closes settle."""
        if self._delay is not None and self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self._delay, self.trim)

    def trim(self) -> None:
        """Give the heap's free pages back now (the timer's callback; a no-op without ``malloc_trim``)."""
        self._pending = None
        if _MALLOC_TRIM is None:
            return
        before, started = resident_bytes(), time.perf_counter()
        _MALLOC_TRIM(0)
        after, seconds = resident_bytes(), time.perf_counter() - started
        returned = max(0, before - after) if before is not None and after is not None else 0
        self.stats.trims += 1
        self.stats.returned_bytes += returned
        self.stats.seconds += seconds
        log.debug("memory trim: %d KiB given back in %.2f ms", returned // 1024, seconds * 1000)

    def close(self) -> None:
        """Drop a pending trim (the server is stopping)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
