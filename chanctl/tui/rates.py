"""Rates over time, from what the admin plane already sends: the server pays nothing for them.

The server-wide series (in, out, broadcasts per second, connections) are the 1 Hz ``stats``
figures, kept for the last ``HISTORY`` seconds. Per-topic rates come from the ``traffic`` tail:
the tap keeps a uniform sample of each 250 ms tick and reports how many entries it left out
(``dropped``), so each sampled entry stands for ``(kept + left out) / kept`` entries. Below the
tap's 200 entries a second nothing is left out and the rates are exact; above, they are an
unbiased estimate. ``in`` counts client events to the topic, ``out`` the deliveries of its
broadcasts (each broadcast times its recipients), as ``messages_out_per_s`` does for the server.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HISTORY", "ServerSeries", "TopicRates"]

HISTORY = 90
"""Seconds of history kept for the graphs (a wide terminal shows up to this many columns)."""
SERIES = ("messages_in_per_s", "messages_out_per_s", "broadcasts_per_s", "connections")
"""The ``stats`` figures the header plots."""


@dataclass
class ServerSeries:
    """The last ``HISTORY`` values of each of ``SERIES``, one per ``stats``."""

    values: dict[str, deque[float]] = field(
        default_factory=lambda: {name: deque(maxlen=HISTORY) for name in SERIES})

    def add(self, stats: dict[str, Any]) -> None:
        for name, series in self.values.items():
            value = stats.get(name)
            series.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0)


class TopicRates:
    """Per-topic messages in and out per second, estimated from the sampled ``traffic`` batches.

    ``add_batch`` counts each batch's entries, scaled by what the tap left out; ``tick`` (on each
    ``stats``, whose ``t`` gives the interval) turns the counts into rates and appends them to
    each topic's history.
    """

    def __init__(self) -> None:
        self.rates: dict[str, tuple[float, float]] = {}
        """``{topic: (in/s, out/s)}`` over the last interval; topics without traffic are absent."""
        self.history: dict[str, deque[tuple[float, float]]] = {}
        """Each topic's ``(in/s, out/s)`` per interval since it was first seen (``HISTORY`` at most)."""
        self.quiet: dict[str, int] = {}
        """Intervals since each topic last had traffic."""
        self._counts: dict[str, list[float]] = {}
        self._dropped: int | None = None
        self._last_t: float | None = None

    def add_batch(self, payload: dict[str, Any]) -> None:
        entries = [e for e in payload.get("entries", []) if isinstance(e, dict)]
        dropped = payload.get("dropped")
        left_out = 0
        if isinstance(dropped, int):
            # The first batch has no baseline (the tap may have run before we joined): counted as is.
            if self._dropped is not None and dropped >= self._dropped:
                left_out = dropped - self._dropped
            self._dropped = dropped
        if not entries:
            return
        scale = (len(entries) + left_out) / len(entries)
        for entry in entries:
            counts = self._counts.setdefault(str(entry.get("topic", "")), [0.0, 0.0])
            if entry.get("dir") == "in":
                counts[0] += scale
            else:
                recipients = entry.get("recipients")
                counts[1] += scale * (recipients if isinstance(recipients, int) else 1)

    def tick(self, t: Any) -> None:
        """Close the interval that ends at ``t`` (the ``stats`` time)."""
        elapsed = 1.0
        if isinstance(t, (int, float)) and self._last_t is not None and t > self._last_t:
            elapsed = t - self._last_t
        if isinstance(t, (int, float)):
            self._last_t = t
        self.rates = {topic: (i / elapsed, o / elapsed) for topic, (i, o) in self._counts.items()}
        self._counts = {}
        for topic in self.rates.keys() | self.history.keys():
            rate = self.rates.get(topic, (0.0, 0.0))
            self.history.setdefault(topic, deque(maxlen=HISTORY)).append(rate)
            self.quiet[topic] = 0 if topic in self.rates else self.quiet.get(topic, 0) + 1

    def forget(self, topic: str) -> None:
        """Drop a topic that left the table."""
        self.history.pop(topic, None)
        self.quiet.pop(topic, None)
