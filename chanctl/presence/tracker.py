"""PresenceTracker: presence of every topic on this node, sent the way phoenix.js ``Presence`` wants it.

What it does per topic with ``presence:`` in the config (PROTOCOL.md §6):

- after every successful join (and rejoin) it tracks the channel under its key, sends every
  member (the joiner included) a ``presence_diff`` and the joiner its ``presence_state``, right
  after the join reply, in that order (checklist items 38-41);
- it untracks everything a channel tracked when the channel stops, whatever the reason (leave,
  disconnect, crash, duplicate join, idle timeout, forced disconnect): the connection calls
  :meth:`PresenceTracker.left` from its one leave path;
- it serves the handler API (``Channel.track/update/untrack/presence_list``).

**Batching (opt-in, ``presence.batch``).** Phoenix sends one diff to every member per change, so N
joins cost O(N²) frames. With a window set, the diffs of a topic are coalesced over it (a throttle:
the first change after a quiet window goes out at once, the changes inside a window go out as one
diff at its end). A joiner inside a window still gets its ``presence_state`` at once: the list as of
the window's start (one encoding shared by every joiner of the window), which the window's diff then
completes, its own join included. :class:`~chanctl.presence.state.Diff` keeps the property this
relies on: the combined diff, applied to any state a client saw during the window, ends in the
server's state. ``count`` mode sends only ``presence_count`` for topics too big to list. Each
connection has a token bucket of updates per topic pattern.

The tracker keeps nothing of a connection: a channel's entry goes when the channel stops, and the
update buckets are weakly keyed, so a closed connection holds no memory here.

The tracker reads no config and compiles nothing: it is handed each topic pattern's
:class:`PresenceSpec`, built by the one compile step (:func:`chanctl.server.compile.compile_config`).

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
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from chanctl.errors import PresenceError
from chanctl.presence.state import Diff, Meta, TopicPresence
from chanctl.protocol.messages import Encoded
from chanctl.protocol.ratelimit import TokenBucket
from chanctl.protocol.router import Router
from chanctl.protocol.socket import ChannelState
from chanctl.escape import shown

if TYPE_CHECKING:
    from chanctl.pubsub.local import LocalPubSub

__all__ = ["KeyExpression", "PresenceSettings", "PresenceSpec", "PresenceTracker"]

log = logging.getLogger("chanctl.presence")

PRESENCE_STATE = "presence_state"
PRESENCE_DIFF = "presence_diff"
PRESENCE_COUNT = "presence_count"
TOO_MANY_UPDATES = "too many presence updates"


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time and timers of batching windows: the running event loop, or a test's manual clock."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer: ...


class UpdateLimit(Protocol):
    updates: int
    """Updates allowed in a burst."""
    per: float
    """Seconds over which the allowance refills."""


class PresenceSettings(Protocol):
    """A topic's ``presence:`` settings, as the config declares them (``PresenceConfig``)."""

    key: str
    meta: dict[str, Any]
    mode: str
    batch: float
    max_updates: UpdateLimit


class KeyExpression(Protocol):
    """A compiled presence key expression."""

    def evaluate(self, variables: dict[str, Any]) -> Any: ...


@dataclass(frozen=True, eq=False)
class PresenceSpec:
    """One topic pattern's presence settings, with its key expression compiled."""

    config: PresenceSettings
    auto: bool
    """Track on join and push ``presence_state`` (the topic has ``presence:``); otherwise only the
    handler API tracks, with these defaults."""
    key: KeyExpression
    track_on_join: bool = True
    """With ``auto``: track each joiner at once. False for a Supabase topic, where a client tracks
    itself (``track``): a joiner gets ``presence_state`` and its key, and is tracked later."""

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
    """One channel incarnation that tracks presences: Phoenix's tracked pid (its id, not the channel)."""

    id: str
    spec: PresenceSpec


@dataclass(eq=False)
class _Topic:
    name: str
    spec: PresenceSpec
    state: TopicPresence = field(default_factory=TopicPresence)
    pending: Diff = field(default_factory=Diff)
    """Changes since the last flush."""
    changed: bool = False
    timer: Timer | None = None
    """The next flush of ``pending``."""
    last_flush: float = float("-inf")
    snapshot: Encoded | None = None
    """With batching: the encoded list as of the last flush, which ``pending`` completes; every
    joiner of a window shares it."""


@dataclass
class PresenceStats:
    """Counters for metrics and benchmarks."""

    diffs: int = 0
    states: int = 0
    counts: int = 0
    limited: int = 0


class PresenceTracker:
    """Presence of every topic on one node.

    Args:
        pubsub: where diffs go (to local subscribers).
        specs: by topic pattern, the topics with ``presence:``: they are tracked on join.
        manual: the settings of topics that only a handler's ``track`` tracks.
        data: the config's data, which key expressions read.
        node: this node's id in the node-tagged state; random when not given.
        clock: the time and timers of batching windows (the running event loop by default).
    """

    def __init__(
        self, pubsub: LocalPubSub, specs: dict[str, PresenceSpec], manual: PresenceSpec, data: dict[str, Any],
        node: str | None = None, clock: Clock | None = None,
    ):
        self.pubsub = pubsub
        self.node = node or os.urandom(4).hex()
        self.data = data
        self.stats = PresenceStats()
        self._specs = specs
        self._manual = manual
        self._router: Router[PresenceSpec] = Router()
        for pattern, spec in self._specs.items():
            self._router.add(pattern, spec)
        self._topics: dict[str, _Topic] = {}
        self._owners: dict[ChannelState, _Owner] = {}
        self._buckets: weakref.WeakKeyDictionary[Any, dict[PresenceSpec, TokenBucket]] = weakref.WeakKeyDictionary()
        self._ids = itertools.count(1)
        self.clock = clock
        """Batching windows run on this clock; tests set a manual one (before any join) to step
        through windows without waiting."""

        self.on_local_change: Callable[[str], None] | None = None
        """Called with a topic's name when this node's own part of it changed (a replication
        layer ships the part to its peers); never for peers' parts."""

    def _time(self) -> Clock:
        return self.clock if self.clock is not None else asyncio.get_running_loop()

    def now(self) -> float:
        return self._time().time()

    # -- the connection's hooks ------------------------------------------------------------------

    def joined(self, connection: Any, channel: ChannelState, user: dict[str, Any], params: Any) -> str | None:
        """A channel joined (its reply is out): track it under its key if its topic has
        ``presence:``, send the diff and the joiner's own view at once; returns the key."""
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
            log.warning("not tracking a presence on %s: %s", shown(channel.topic), shown(exc.reason))
            key = None
        owner = self._owner(channel, spec)
        topic = self._topic(channel.topic, spec)
        window = spec.config.batch
        now = self.now()
        in_window = window > 0 and (topic.timer is not None or now - topic.last_flush < window)
        # Inside a window the joiner's state is the list as of the window's start (taken before its
        # own track): the window's diff, which it gets with everyone, completes it.
        state = self._snapshot(topic) if in_window and spec.config.mode == "list" else None
        if key is not None and spec.track_on_join:
            meta = {**spec.config.meta, "online_at": int(time.time())}
            self._record(topic, topic.state.track(self.node, owner.id, key, meta)[1])
            self._local(topic)
        broadcast = False
        if in_window:
            self._flush_at_window_end(topic)
        else:
            broadcast = self._flush(topic, now)  # Phoenix's order: reply (sent), diff, state
        if spec.config.mode == "count":
            if not broadcast:
                connection.push(channel, PRESENCE_COUNT, _count(topic.state))
                self.stats.counts += 1
        else:
            connection.push(channel, PRESENCE_STATE, state if state is not None else self._snapshot(topic))
            self.stats.states += 1
        self._forget_if_empty(topic)
        return key

    def left(self, channel: ChannelState) -> None:
        """A channel stopped, for any reason: untrack everything it tracked."""
        owner = self._owners.pop(channel, None)
        if owner is None:
            return
        topic = self._topics.get(channel.topic)
        if topic is not None:
            self._changed(topic, topic.state.untrack(self.node, owner.id))
            self._local(topic)

    # -- the handler API -------------------------------------------------------------------------

    def track(self, channel: ChannelState, key: str, meta: Meta, connection: Any = None) -> str:
        """Track ``key`` for this channel; returns the new ``phx_ref``. With ``connection`` (a track
        the client asked for, e.g. Supabase's ``track``), it spends that connection's update
        allowance as :meth:`update` does, so that a client cannot flood members by tracking anew.

        Raises:
            PresenceError: ``already_tracked``, or ``too many presence updates`` past the cap.
        """
        spec = self._specs.get(channel.route.pattern.source, self._manual)
        if connection is not None and not self._allow(connection, spec):
            self.stats.limited += 1
            raise PresenceError(TOO_MANY_UPDATES, str(key))
        owner = self._owner(channel, spec)
        topic = self._topic(channel.topic, spec)
        stored, diff = topic.state.track(self.node, owner.id, str(key), meta)
        self._changed(topic, diff)
        self._local(topic)
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
        self._local(topic)
        return stored["phx_ref"]

    def untrack(self, channel: ChannelState, key: str | None = None) -> None:
        """Untrack ``key`` (or every key) of this channel; a no-op when nothing is tracked."""
        owner = self._owners.get(channel)
        topic = self._topics.get(channel.topic)
        if owner is not None and topic is not None:
            self._changed(topic, topic.state.untrack(self.node, owner.id, None if key is None else str(key)))
            self._local(topic)

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

    def part(self, topic_name: str) -> dict[tuple[str, str], Meta]:
        """What this node tracks on ``topic_name``, to ship to peers."""
        topic = self._topics.get(topic_name)
        return {} if topic is None else topic.state.part(self.node)

    def peers(self, topic_name: str) -> list[str]:
        """The other nodes that have presences on ``topic_name`` here."""
        topic = self._topics.get(topic_name)
        return [] if topic is None else [node for node in topic.state.parts if node != self.node]

    def local_topics(self) -> list[str]:
        """Topics where this node tracks someone."""
        return [name for name, topic in self._topics.items() if self.node in topic.state.parts]

    def _local(self, topic: _Topic) -> None:
        if self.on_local_change is not None:
            self.on_local_change(topic.name)

    def drop_node(self, node: str) -> None:
        """Another node is down: its presences leave every topic."""
        for topic in list(self._topics.values()):
            self._changed(topic, topic.state.drop_node(node))

    def close(self) -> None:
        """Cancel pending flushes (server shutdown)."""
        for topic in self._topics.values():
            if topic.timer is not None:
                topic.timer.cancel()
                topic.timer = None

    # -- batching ------------------------------------------------------------------------------

    def _owner(self, channel: ChannelState, spec: PresenceSpec) -> _Owner:
        owner = self._owners.get(channel)
        if owner is None:
            owner = self._owners[channel] = _Owner(f"{next(self._ids)}", spec)
        return owner

    def _topic(self, name: str, spec: PresenceSpec) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name, spec)
        return topic

    def _record(self, topic: _Topic, diff: Diff) -> None:
        if diff:
            if topic.pending:
                topic.pending.add(diff)
            else:
                topic.pending = diff  # nothing pending (every unbatched join): the diff is the whole of it
            topic.changed = True

    def _changed(self, topic: _Topic, diff: Diff) -> None:
        """An update, untrack or remote change: sent after the handler's reply (as Phoenix's tracker
        does), or at the end of the current window."""
        self._record(topic, diff)
        if not diff or topic.timer is not None:
            return  # nothing to send, or a flush is due and this change rides with it
        window = topic.spec.config.batch
        if window > 0 and self.now() - topic.last_flush < window:
            self._flush_at_window_end(topic)
        else:
            topic.timer = asyncio.get_running_loop().call_soon(self._flush_soon, topic)

    def _flush_at_window_end(self, topic: _Topic) -> None:
        if topic.timer is None:
            topic.timer = self._time().call_at(topic.last_flush + topic.spec.config.batch, self._flush_soon, topic)

    def _flush_soon(self, topic: _Topic) -> None:
        topic.timer = None
        self._flush(topic, self.now())
        self._forget_if_empty(topic)

    def _flush(self, topic: _Topic, now: float) -> bool:
        """Send what changed to every member; True when a frame went to all of them."""
        if topic.timer is not None:
            topic.timer.cancel()  # a join flushes at once what was due soon
            topic.timer = None
        topic.last_flush = now
        changed, topic.changed = topic.changed, False
        if topic.spec.config.mode == "count":
            topic.pending = Diff()
            if changed:
                self.pubsub.broadcast_local(topic.name, PRESENCE_COUNT, _count(topic.state))
                self.stats.counts += 1
            return changed
        if not topic.pending:
            return False
        diff, topic.pending = topic.pending, Diff()
        topic.snapshot = None  # the list moved on
        self.pubsub.broadcast_local(topic.name, PRESENCE_DIFF, diff.payload())
        self.stats.diffs += 1
        return True

    def _snapshot(self, topic: _Topic) -> Encoded:
        """The encoded list, once per window: as of the last flush when nothing is pending (then
        kept for the window's other joiners), else the list as it is now (also completed by the
        window's diff, see the module docstring)."""
        if topic.snapshot is not None:
            return topic.snapshot
        encoded = Encoded(orjson.dumps(topic.state.list()))
        if not topic.pending:
            topic.snapshot = encoded
        return encoded

    def _forget_if_empty(self, topic: _Topic) -> None:
        if not topic.state.sessions and topic.timer is None and self._topics.get(topic.name) is topic:
            del self._topics[topic.name]  # nobody left; a later join starts afresh

    def _allow(self, connection: Any, spec: PresenceSpec) -> bool:
        buckets = self._buckets.setdefault(connection, {})
        bucket = buckets.get(spec)
        now = self.now()
        if bucket is None:
            limit = spec.config.max_updates
            bucket = buckets[spec] = TokenBucket(limit.updates / limit.per, limit.updates, last=now)
        return bucket.take(now) == 0.0


def _count(state: TopicPresence) -> dict[str, int]:
    return {"count": len(state), "sessions": state.sessions}
