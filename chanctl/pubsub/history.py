"""Broadcast history and recovery, in memory on one node (Centrifugo's offsets and epochs).

A topic whose pattern opts in (``history: {size: 100, ttl: 5m}``) numbers its broadcasts: each
gets the next ``offset`` of the topic (1, 2, 3, ...) within an ``epoch``, a short random string
that changes whenever the numbering starts over (here: when the server starts, or when a topic's
history was dropped after a long quiet). Both reach the client inside the broadcast's payload,
as the keys ``offset`` and ``epoch`` (beside ``id`` and ``inserted_at`` for declarative events),
and the last ``size`` broadcasts younger than ``ttl`` are kept.

A client that joins with ``{"since": {"offset": N, "epoch": E}}`` gets back exactly the broadcasts
after N, in order, before any new one, if all of them are still kept in epoch E; otherwise none
(all or nothing) and it learns so from ``recovered: false``. Presence events are state, not
history: ``presence_state`` on join replaces them, so they are neither numbered nor kept. Binary
payloads cannot carry an offset and are delivered without one, and not kept.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "HistorySpec", "HistorySpecs", "HistoryStats", "Recovery", "TopicHistory", "read_since"]

NOT_HISTORY = frozenset({"presence_state", "presence_diff", "presence_count"})
"""Events that are state, replaced on join, never numbered."""
META_TTL = 24 * 3600.0
"""How long a topic keeps its epoch and offset after its last broadcast or join, once its
entries expired: a client back within it can still learn that it missed nothing."""
SWEEP_EVERY = 60.0
"""Seconds between sweeps of expired entries and quiet topics (run by a broadcast, so an idle
server runs none; what a topic keeps is bounded by its ``size`` meanwhile)."""
_SPEC_CACHE = 10_000
"""Topics whose spec lookup (a router match) is remembered; the cache starts over when full."""


@dataclass(frozen=True, slots=True)
class HistorySpec:
    """A topic pattern's ``history:`` settings."""

    size: int
    ttl: float


class HistorySpecs:
    """Which topics keep history, and how much: a router match asked once per topic name."""

    def __init__(self, spec_for: Callable[[str], HistorySpec | None]):
        self._spec_for = spec_for
        self._specs: dict[str, HistorySpec | None] = {}

    def __call__(self, topic: str) -> HistorySpec | None:
        specs = self._specs
        if topic in specs:
            return specs[topic]
        if len(specs) >= _SPEC_CACHE:
            specs.clear()
        spec = specs[topic] = self._spec_for(topic)
        return spec

    def kept(self) -> int:
        """Topics with history looked up lately (since the cache last started over)."""
        return sum(spec is not None for spec in self._specs.values())


SINCE_PROBLEM = "since takes {offset: integer, epoch: string (optional)}"


def read_since(params: Any) -> tuple[int, str | None] | str | None:
    """A join's ``since``: ``(offset, epoch or None)``, None when absent, or the problem's text."""
    since = params.get("since") if isinstance(params, dict) else None
    if since is None:
        return None
    offset = since.get("offset") if isinstance(since, dict) else None
    epoch = since.get("epoch") if isinstance(since, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or not (epoch is None or isinstance(epoch, str)):
        return SINCE_PROBLEM
    return offset, epoch


@dataclass(slots=True)
class TopicHistory:
    """One topic's numbering and recent broadcasts: ``(offset, time, event, payload)``."""

    spec: HistorySpec
    epoch: str
    offset: int = 0
    touched: float = 0.0
    entries: deque[tuple[int, float, str, dict[str, Any]]] = field(default_factory=deque)

    def append(self, event: str, payload: dict[str, Any], now: float) -> dict[str, Any]:
        self.offset += 1
        self.touched = now
        stamped = {**payload, "offset": self.offset, "epoch": self.epoch}
        entries = self.entries
        entries.append((self.offset, now, event, stamped))
        if len(entries) > self.spec.size:
            entries.popleft()
        self.expire(now)
        return stamped

    def expire(self, now: float) -> None:
        entries, horizon = self.entries, now - self.spec.ttl
        while entries and entries[0][1] <= horizon:
            entries.popleft()

    def after(self, offset: int, now: float) -> list[tuple[str, dict[str, Any]]] | None:
        """Every kept broadcast after ``offset``, or None when one of them is no longer kept."""
        self.expire(now)
        if offset > self.offset or offset < 0:
            return None
        if offset == self.offset:
            return []
        entries = self.entries
        if not entries or entries[0][0] > offset + 1:
            return None  # the gap starts before what is kept
        start = offset + 1 - entries[0][0]
        return [(event, payload) for _, _, event, payload in list(entries)[start:]]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a join on a history topic learns, and what it must be sent before anything new."""

    epoch: str | None
    """None when the history could not be read (Redis unreachable): the reply then has no position."""
    offset: int | None
    recovered: bool | None
    """True or False when the join asked ``since``; None when it did not."""
    missed: list[tuple[str, dict[str, Any]]]
    problem: str | None = None
    """Why ``since`` could not be read, when it could not."""

    def reply(self) -> dict[str, Any]:
        """The keys added to the join reply."""
        body: dict[str, Any] = {} if self.epoch is None else {"epoch": self.epoch, "offset": self.offset}
        if self.recovered is not None:
            body["recovered"] = self.recovered
        if self.problem is not None:
            body["since_error"] = self.problem
        return body


@dataclass
class HistoryStats:
    recovered: int = 0
    """Joins with ``since`` that got every missed broadcast (possibly none)."""
    failed: int = 0
    """Joins with ``since`` that could not be recovered (``recovered: false``)."""
    replayed: int = 0
    """Broadcasts sent again to recovering joiners."""


class History:
    """The numbered recent broadcasts of every topic whose pattern opts in.

    Args:
        spec_for: the history settings of a topic, or None (no history); asked once per topic.
        clock: monotonic seconds, injected by tests.

    One node only: a node of a cluster hears a topic only while it has subscribers to it, so its
    numbering would have gaps; there the history lives in Redis (:mod:`chanctl.pubsub.streams`).
    """

    def __init__(self, spec_for: Callable[[str], HistorySpec | None], clock: Callable[[], float] = time.monotonic):
        self._spec = HistorySpecs(spec_for)
        self._clock = clock
        self._topics: dict[str, TopicHistory] = {}
        self._next_sweep = clock() + SWEEP_EVERY
        self.stats = HistoryStats()

    def _topic(self, topic: str) -> TopicHistory | None:
        existing = self._topics.get(topic)
        if existing is not None:
            return existing
        spec = self._spec(topic)
        if spec is None:
            return None
        created = self._topics[topic] = TopicHistory(spec, os.urandom(4).hex(), touched=self._clock())
        return created

    def record(self, topic: str, event: str, payload: Any) -> Any:
        """The payload to broadcast: numbered (a copy with ``offset`` and ``epoch``) and kept when
        ``topic`` has history, else ``payload`` itself."""
        if event in NOT_HISTORY or not isinstance(payload, dict):
            return payload
        history = self._topic(topic)
        if history is None:
            return payload
        now = self._clock()
        if now >= self._next_sweep:
            self.sweep()
        return history.append(event, payload, now)

    def join(self, topic: str, params: Any) -> Recovery | None:
        """The position (and, for ``since``, the broadcasts missed) of a join; None without history.

        Runs synchronously, so that the caller can send the missed broadcasts and subscribe
        before any new broadcast: nothing is lost or repeated in between.
        """
        history = self._topic(topic)
        if history is None:
            return None
        now = self._clock()
        history.touched = now
        since = read_since(params)
        if since is None:
            return Recovery(history.epoch, history.offset, None, [])
        if isinstance(since, str):
            self.stats.failed += 1
            return Recovery(history.epoch, history.offset, False, [], since)
        offset, epoch = since
        missed = history.after(offset, now) if epoch in (None, history.epoch) else None
        if missed is None:
            self.stats.failed += 1
            return Recovery(history.epoch, history.offset, False, [])
        self.stats.recovered += 1
        self.stats.replayed += len(missed)
        return Recovery(history.epoch, history.offset, True, missed)

    async def recover(self, topic: str, params: Any) -> Recovery | None:
        """:meth:`join` behind the interface the Redis history shares; it never suspends, so
        nothing can be broadcast between the read and the caller's subscription."""
        return self.join(topic, params)

    def sweep(self) -> None:
        """Drop expired entries, and the topics quiet for longer than :data:`META_TTL` with none left."""
        now = self._clock()
        self._next_sweep = now + SWEEP_EVERY
        for name, history in list(self._topics.items()):
            history.expire(now)
            if not history.entries and now - history.touched > META_TTL:
                del self._topics[name]

    def topics(self) -> int:
        return len(self._topics)
