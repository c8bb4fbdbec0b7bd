"""What a bench run counts: latency histograms and tallies by reason, cheap to add to and to merge.

Workers keep their own and send them to the coordinator as plain dicts, so a run of ten million
deliveries costs a few thousand buckets, not ten million floats.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Histogram", "Tally"]

_EXACT_BITS = 10
"""Values below 2**10 µs are kept exactly; above, each bucket spans 1/1024 of its value (±0.1%)."""


class Histogram:
    """Latencies in whole microseconds, bucketed with a relative error under 0.1%."""

    __slots__ = ("buckets", "count", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0

    def add(self, us: int) -> None:
        if us < 0:
            us = 0  # clocks of one machine: only rounding can make this negative
        shift = us.bit_length() - _EXACT_BITS
        key = us if shift <= 0 else (us >> shift) << shift
        buckets = self.buckets
        buckets[key] = buckets.get(key, 0) + 1
        self.count += 1
        if us > self.max:
            self.max = us

    def merge(self, other: Histogram) -> None:
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n
        self.count += other.count
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> int | None:
        """The smallest bucket value at or below which ``p`` percent of the values fall."""
        if not self.count:
            return None
        rank = max(1, -(-self.count * p // 100))  # ceil without floats drifting
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                return min(key, self.max)
        return self.max

    def summary_ms(self) -> dict[str, float | int | None]:
        """p50/p90/p99/max in milliseconds and the count, as the report prints them."""
        def ms(us: int | None) -> float | None:
            return None if us is None else round(us / 1000, 3)

        return {"count": self.count, "p50_ms": ms(self.percentile(50)), "p90_ms": ms(self.percentile(90)),
                "p99_ms": ms(self.percentile(99)), "max_ms": ms(self.max if self.count else None)}

    def to_dict(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "count": self.count, "max": self.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        found = cls()
        found.buckets = {int(k): int(v) for k, v in data["buckets"].items()}
        found.count, found.max = int(data["count"]), int(data["max"])
        return found


class Tally(dict[str, int]):
    """Counts by reason: ``{"http 403": 3, "join: unauthorized": 2}``."""

    def add(self, reason: str, n: int = 1) -> None:
        self[reason] = self.get(reason, 0) + n

    def merge(self, other: dict[str, int]) -> None:
        for reason, n in other.items():
            self.add(reason, n)
