"""PresenceTracker: presence of every topic on this node, sent the way phoenix.js ``Presence`` wants it.

What it does per topic with ``presence:`` in the config (PROTOCOL.md §6):

- after every successful join (and rejoin) it tracks the channel under its key and sends the
  joiner ``presence_state``, and every member a ``presence_diff``;
- it untracks everything a channel tracked when the channel stops, whatever the reason (leave,
  disconnect, crash, duplicate join, idle timeout, forced disconnect): the connection calls
  :meth:`PresenceTracker.left` from its one leave path;
- it serves the handler API (``Channel.track/update/untrack/presence_list``).

**Why batching.** Phoenix sends one diff to every member per join, so N joins cost O(N²) frames.
Here the diffs of a topic are coalesced over ``batch`` seconds (a throttle: the first change after
a quiet window goes out at once, in Phoenix's order reply, diff, state; changes inside the window go
out together at its end). Joiners inside a window get their ``presence_state`` at the flush too, all
sharing one encoded copy of the list. ``count`` mode sends only ``presence_count`` for topics too big
to list. Each connection has a token bucket of updates per topic pattern.

Nothing here assumes one process: the state of a topic is kept in node-tagged parts
(:mod:`chanctl.presence.state`), this tracker writes only its own node's part, and diffs go to local
subscribers only; a replication layer installs peers' parts with :meth:`PresenceTracker.replace_part`
and :meth:`PresenceTracker.drop_node`, and this node's members get the diffs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from chanctl.config.model import PRESENCE_KEY_VARIABLES, Config, PresenceConfig, PresenceLimit
from chanctl.errors import PresenceError
from chanctl.presence.state import Diff, Meta, TopicPresence
from chanctl.protocol.router import Router
from chanctl.protocol.socket import ChannelState
from chanctl.rules import Expression, compile_expression

if TYPE_CHECKING:
    from chanctl.pubsub.local import LocalPubSub

__all__ = ["PresenceSpec", "PresenceTracker"]

log = logging.getLogger("chanctl.presence")

PRESENCE_STATE = "presence_state"
PRESENCE_DIFF = "presence_diff"
PRESENCE_COUNT = "presence_count"
TOO_MANY_UPDATES = "too many presence updates"
STATE_BUDGET = 32 * 1024 * 1024
"""With batching on: bytes that may wait unsent to clients that were just sent a ``presence_state``;
joiners past it get theirs at a later try (and no diffs meanwhile: the state will hold them), so
that a burst of N joins into a big topic never holds N copies of the full list in memory at once."""
_SENDING_RECOUNT = 1024


@dataclass(frozen=True, eq=False)
class PresenceSpec:
    """One topic pattern's presence settings, with its key expression compiled."""

    config: PresenceConfig
    auto: bool
    """Track on join and push ``presence_state`` (the topic has ``presence:``); otherwise only the
    handler API tracks, with these defaults."""
    key: Expression

    @classmethod
    def compile(cls, config: PresenceConfig, auto: bool = True) -> PresenceSpec:
        return cls(config, auto, compile_expression(config.key, PRESENCE_KEY_VARIABLES, None, "string"))

    def key_for(self, variables: dict[str, Any]) -> str:
        """The presence key (always a string on the wire, as Phoenix stringifies keys).

        Raises:
            PresenceError: the expression failed on these variables (a missing field, say).
        """
        try:
            value = self.key.evaluate(variables)
        except Exception as exc:  # the CEL runtime raises KeyError, TypeError, RuntimeError...
            raise PresenceError(f"presence key {self.config.key!r} failed: {type(exc).__name__}: {exc}") from None
        if value is None or isinstance(value, (dict, list)):
            raise PresenceError(f"presence key {self.config.key!r} gave {value!r}, not a string or number")
        return str(value)


@dataclass(eq=False)
class _Owner:
    """One channel incarnation that tracks presences: Phoenix's tracked pid."""

    id: str
    connection: Any
    channel: ChannelState
    spec: PresenceSpec


@dataclass(eq=False)
class _Topic:
    name: str
    spec: PresenceSpec
    state: TopicPresence = field(default_factory=TopicPresence)
    pending: Diff = field(default_factory=Diff)
    changed: bool = False
    waiting: list[_Owner] = field(default_factory=list)
    """Joiners whose ``presence_state`` goes out at the next flush."""
    timer: asyncio.Handle | None = None
    """The next flush of diffs (and of the joiners' states)."""
    retry: asyncio.Handle | None = None
    """The next try at the states the budget held back; it never holds back a diff."""
    last_flush: float = float("-inf")


@dataclass
class _Bucket:
    limit: PresenceLimit
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        rate = self.limit.updates / self.limit.per
        self.tokens = min(float(self.limit.updates), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class PresenceStats:
    """Counters for metrics and benchmarks."""

    diffs: int = 0
    states: int = 0
    counts: int = 0
    limited: int = 0
    deferred: int = 0
    """Times a joiner's state waited for a later flush (the state budget was spent)."""


class PresenceTracker:
    """Presence of every topic on one node.

    Args:
        pubsub: where diffs go (to local subscribers).
        config: the server config; topics with ``presence:`` are tracked on join.
        node: this node's id in the node-tagged state; random when not given.
        clock: seconds, monotonic (the event loop's, by default).
    """

    def __init__(self, pubsub: LocalPubSub, config: Config, node: str | None = None, clock: Callable[[], float] | None = None):
        self.pubsub = pubsub
        self.node = node or os.urandom(4).hex()
        self.data = config.data
        self.stats = PresenceStats()
        self._specs = {
            pattern: PresenceSpec.compile(topic.presence) for pattern, topic in config.topics.items() if topic.presence is not None
        }
        self._manual = PresenceSpec.compile(PresenceConfig(), auto=False)
        self._router: Router[PresenceSpec] = Router()
        for pattern, spec in self._specs.items():
            self._router.add(pattern, spec)
        self._topics: dict[str, _Topic] = {}
        self._owners: dict[ChannelState, _Owner] = {}
        self._buckets: weakref.WeakKeyDictionary[Any, dict[PresenceSpec, _Bucket]] = weakref.WeakKeyDictionary()
        self._ids = itertools.count(1)
        self._clock = clock
        self._sending: list[_Owner] = []
        """Joiners recently sent a ``presence_state``, until their connection has sent everything."""
        self._in_flight = 0
        """At least the bytes still unsent to ``_sending`` (recounted when it reaches the budget)."""

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- the connection's hooks ------------------------------------------------------------------

    def joined(self, connection: Any, channel: ChannelState, user: dict[str, Any], params: Any) -> str | None:
        """A channel joined: track it under its key if its topic has ``presence:``; returns the key."""
        spec = self._specs.get(channel.route.pattern.source)
        if spec is None:
            return None
        variables = {
            "user": user,
            "topic": {**channel.route.captures, "name": channel.topic},
            "params": params,
            "data": self.data,
        }
        try:
            key = spec.key_for(variables)
        except PresenceError as exc:
            log.warning("not tracking a presence on %s: %s", channel.topic, exc.reason)
            key = None
        owner = self._owner(connection, channel, spec)
        topic = self._topic(channel.topic, spec)
        if key is not None:
            meta = {**spec.config.meta, "online_at": int(time.time())}
            self._record(topic, topic.state.track(self.node, owner.id, key, meta)[1])
        topic.waiting.append(owner)
        self._schedule(topic)
        return key

    def left(self, channel: ChannelState) -> None:
        """A channel stopped, for any reason: untrack everything it tracked."""
        owner = self._owners.pop(channel, None)
        if owner is None:
            return
        topic = self._topics.get(channel.topic)
        if topic is not None:
            self._changed(topic, topic.state.untrack(self.node, owner.id))

    # -- the handler API -------------------------------------------------------------------------

    def track(self, connection: Any, channel: ChannelState, key: str, meta: Meta) -> str:
        """Track ``key`` for this channel; returns the new ``phx_ref``.

        Raises:
            PresenceError: ``already_tracked``.
        """
        spec = self._specs.get(channel.route.pattern.source, self._manual)
        owner = self._owner(connection, channel, spec)
        topic = self._topic(channel.topic, spec)
        stored, diff = topic.state.track(self.node, owner.id, str(key), meta)
        self._changed(topic, diff)
        return stored["phx_ref"]

    def update(self, connection: Any, channel: ChannelState, key: str, meta: Meta | Callable[[Meta], Meta]) -> str:
        """Replace (or transform) this channel's meta under ``key``; returns the new ``phx_ref``.

        Raises:
            PresenceError: ``nopresence``, or ``too many presence updates`` past the cap.
        """
        owner = self._owners.get(channel)
        topic = self._topics.get(channel.topic)
        if owner is None or topic is None or topic.state.get(self.node, owner.id, str(key)) is None:
            raise PresenceError("nopresence", str(key))
        if not self._allow(connection, owner.spec):
            self.stats.limited += 1
            raise PresenceError(TOO_MANY_UPDATES, str(key))
        stored, diff = topic.state.update(self.node, owner.id, str(key), meta)
        self._changed(topic, diff)
        return stored["phx_ref"]

    def untrack(self, channel: ChannelState, key: str | None = None) -> None:
        """Untrack ``key`` (or every key) of this channel; a no-op when nothing is tracked."""
        owner = self._owners.get(channel)
        topic = self._topics.get(channel.topic)
        if owner is not None and topic is not None:
            self._changed(topic, topic.state.untrack(self.node, owner.id, None if key is None else str(key)))

    def list(self, topic: str) -> dict[str, dict[str, list[Meta]]]:
        """``{key: {"metas": [...]}}`` for ``topic`` over every node; ``{}`` when nobody is there."""
        found = self._topics.get(topic)
        return {} if found is None else found.state.list()

    def count(self, topic: str) -> dict[str, int]:
        """``{"count": keys, "sessions": metas}`` for ``topic``."""
        found = self._topics.get(topic)
        return {"count": 0, "sessions": 0} if found is None else _count(found.state)

    def topics(self) -> dict[str, int]:
        """Tracked topics and how many keys each has."""
        return {name: len(topic.state) for name, topic in self._topics.items()}

    # -- for a replication layer -----------------------------------------------------------------

    def replace_part(self, topic_name: str, node: str, entries: dict[tuple[str, str], Meta]) -> None:
        """Install what another ``node`` tracks on ``topic_name`` (its ``TopicPresence.part``, as
        received); local members get the difference as a ``presence_diff``, batched as usual."""
        match = self._router.match(topic_name)
        topic = self._topic(topic_name, self._manual if match is None else match.target)
        self._changed(topic, topic.state.replace_part(node, entries))

    def drop_node(self, node: str) -> None:
        """Another node is down: its presences leave every topic."""
        for topic in list(self._topics.values()):
            self._changed(topic, topic.state.drop_node(node))

    def close(self) -> None:
        """Cancel pending flushes (server shutdown)."""
        for topic in self._topics.values():
            for handle in (topic.timer, topic.retry):
                if handle is not None:
                    handle.cancel()
            topic.timer = topic.retry = None

    # -- batching --------------------------------------------------------------------------------

    def _owner(self, connection: Any, channel: ChannelState, spec: PresenceSpec) -> _Owner:
        owner = self._owners.get(channel)
        if owner is None:
            owner = self._owners[channel] = _Owner(f"{next(self._ids)}", connection, channel, spec)
        return owner

    def _topic(self, name: str, spec: PresenceSpec) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name, spec)
        return topic

    def _record(self, topic: _Topic, diff: Diff) -> None:
        if diff:
            topic.pending.add(diff)
            topic.changed = True

    def _changed(self, topic: _Topic, diff: Diff) -> None:
        self._record(topic, diff)
        if diff:
            self._schedule(topic, at_once=False)

    def _schedule(self, topic: _Topic, at_once: bool = True) -> None:
        """Flush now (a join: Phoenix's reply, diff, state), soon (after the handler's reply, as
        Phoenix's tracker does for updates and leaves), or at the end of the current window."""
        if topic.timer is not None:
            return  # a flush is due; this change rides with it
        window = topic.spec.config.batch
        now = self.now()
        loop = asyncio.get_running_loop()
        if now - topic.last_flush < window:
            topic.timer = loop.call_at(topic.last_flush + window, self._flush, topic, None, True)
        elif at_once:
            self._flush(topic, now)
        else:
            topic.timer = loop.call_soon(self._flush, topic, None)

    def _flush(self, topic: _Topic, now: float | None, batched: bool = False) -> None:
        topic.timer = None
        topic.last_flush = self.now() if now is None else now
        waiting, topic.waiting = topic.waiting, []
        if topic.spec.config.mode == "count":
            self._flush_count(topic, waiting)
        else:
            self._flush_list(topic, waiting, batched)
        topic.changed = False
        self._retry_later(topic)
        self._forget_if_empty(topic)

    def _retry(self, topic: _Topic) -> None:
        topic.retry = None
        waiting, topic.waiting = topic.waiting, []
        self._send_states(topic, [owner for owner in waiting if not owner.channel.closed])
        self._retry_later(topic)
        self._forget_if_empty(topic)

    def _retry_later(self, topic: _Topic) -> None:
        if topic.waiting and topic.retry is None:
            loop = asyncio.get_running_loop()
            topic.retry = loop.call_later(topic.spec.config.batch, self._retry, topic)

    def _forget_if_empty(self, topic: _Topic) -> None:
        if not topic.state.sessions and topic.timer is None and topic.retry is None and self._topics.get(topic.name) is topic:
            del self._topics[topic.name]  # nobody left; a later join starts afresh

    def _flush_list(self, topic: _Topic, waiting: list[_Owner], batched: bool) -> None:
        joiners = [owner for owner in waiting if not owner.channel.closed] if topic.spec.auto else []
        if topic.pending:
            diff, topic.pending = topic.pending, Diff()
            # At the end of a window, a joiner's presence_state below already holds this diff: it
            # would be a duplicate, and in a burst of joins the largest frame of all, sent to the
            # most clients. (Unbatched, the joiner gets its diff too, in Phoenix's order.)
            skip = {owner.connection for owner in joiners} if batched else ()
            self.pubsub.broadcast(topic.name, PRESENCE_DIFF, diff.payload(), skip=skip)
            self.stats.diffs += 1
        self._send_states(topic, joiners)

    def _send_states(self, topic: _Topic, joiners: list[_Owner]) -> None:
        """Push ``presence_state`` to ``joiners`` while the budget lasts; the rest wait for a retry."""
        if joiners:
            # One encode of the list for every joiner of this window; each frame keeps its join_ref.
            encoded = orjson.dumps(topic.state.list())
            state = orjson.Fragment(encoded)
            served = 0
            paced = topic.spec.config.batch > 0  # unbatched is Phoenix's behaviour: every state at once
            for owner in joiners:
                if paced:
                    if self._in_flight >= STATE_BUDGET or len(self._sending) >= _SENDING_RECOUNT:
                        # An upper bound (some has been sent since): count again only when it seems
                        # spent, or the list is long (so that it never keeps closed connections long).
                        self._in_flight = self._unsent()
                        if self._in_flight >= STATE_BUDGET:
                            break
                    self._sending.append(owner)
                    self._in_flight += len(encoded)
                owner.connection.push(owner.channel, PRESENCE_STATE, state)
                served += 1
            self.stats.states += served
            self.stats.deferred += len(joiners) - served
            topic.waiting[:0] = joiners[served:]

    def _unsent(self) -> int:
        """Bytes still unsent to the joiners recently sent a state (and forget those that are done)."""
        total, still = 0, []
        for owner in self._sending:
            unsent = 0 if owner.channel.closed else owner.connection.unsent()
            if unsent:
                total += unsent
                still.append(owner)
        self._sending = still
        return total

    def _flush_count(self, topic: _Topic, waiting: list[_Owner]) -> None:
        topic.pending = Diff()
        payload = _count(topic.state)
        if topic.changed:
            self.pubsub.broadcast(topic.name, PRESENCE_COUNT, payload)
            self.stats.counts += 1
            return
        for owner in waiting:
            if not owner.channel.closed:
                owner.connection.push(owner.channel, PRESENCE_COUNT, payload)
                self.stats.counts += 1

    def _allow(self, connection: Any, spec: PresenceSpec) -> bool:
        buckets = self._buckets.setdefault(connection, {})
        bucket = buckets.get(spec)
        now = self.now()
        if bucket is None:
            limit = spec.config.max_updates
            bucket = buckets[spec] = _Bucket(limit, float(limit.updates), now)
        return bucket.take(now)


def _count(state: TopicPresence) -> dict[str, int]:
    return {"count": len(state), "sessions": state.sessions}
