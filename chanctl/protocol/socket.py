"""SocketProtocol: one connection's channel table and the dispatch order of PROTOCOL.md §3.

Feed it frames with :meth:`SocketProtocol.receive`; it answers what it can answer alone (heartbeat,
unmatched topic, leave, stale join_ref, channel limit) by queueing frames, and returns the actions
that need a channel handler (:class:`Join`, :class:`Deliver`, :class:`Leave`). The runtime runs the
handler and reports the outcome back (:meth:`join_succeeded`, :meth:`reply`, :meth:`crash`, ...),
which queues the frames Phoenix would send. :meth:`data_to_send` returns the queued frames and
empties the queue.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chanctl.protocol.messages import (
    ACCESS_TOKEN,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    Message,
    Ref,
    Reply,
    same_ref,
)
from chanctl.errors import ProtocolViolation
from chanctl.protocol.ratelimit import TokenBucket
from chanctl.protocol.router import Route, Router
from chanctl.protocol.serializers import Serializer
from chanctl.escape import shown

__all__ = ["ChannelState", "Deliver", "Join", "Leave", "LeaveReason", "Refresh", "SocketProtocol", "Stats"]

log = logging.getLogger("chanctl.protocol")


class LeaveReason(enum.Enum):
    """Why a channel stops; handlers see it in ``terminate``."""

    LEFT = "left"
    """The client sent phx_leave."""
    DUPLICATE_JOIN = "duplicate_join"
    """The client joined the same topic again; the old channel's terminate does not run (§3.3)."""
    CLOSED = "closed"
    """The connection went away."""
    CRASHED = "crashed"
    """The handler raised."""
    STOPPED = "stopped"
    """The handler asked to stop."""


@dataclass(eq=False, slots=True, weakref_slot=True)
class ChannelState:
    """One joined (socket, topic) incarnation, identified by its join_ref."""

    topic: str
    join_ref: Ref
    """The join's ``join_ref`` as the client sent it (None for a join without one, as V1 clients
    send): what a later frame's join_ref is compared with, and what phx_close and phx_error carry,
    as Phoenix keeps it in its socket's channel table."""
    reply_join_ref: Ref
    """The join_ref on this channel's replies and pushes: the join's join_ref, or its ref when it
    had none (Phoenix's ``socket.join_ref`` inside the channel, ``join_ref || ref``)."""
    route: Route[Any]
    handler: Any = None
    """Whatever the runtime runs for this channel; the core never looks inside."""
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Join:
    """Run the route's join callback, then report back with join_succeeded/join_refused/join_crashed."""

    topic: str
    join_ref: Ref
    """As the client sent it: None for a join without one (its reply carries null, as Phoenix's)."""
    ref: Ref
    payload: Any
    route: Route[Any]
    replaced: ChannelState | None = None
    """The channel this join replaces (duplicate join): already stopped, closed after the reply."""

    @property
    def channel_join_ref(self) -> Ref:
        """The join_ref the channel sees and puts on its replies and pushes: ``join_ref || ref``."""
        return self.join_ref if self.join_ref is not None else self.ref


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand a client event to a joined channel's handle_in."""

    channel: ChannelState
    ref: Ref
    event: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Leave:
    """Stop a channel: terminate it (unless the reason says not), unsubscribe, untrack presence."""

    channel: ChannelState
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class Refresh:
    """A fresh socket token (``access_token``, on topic ``phoenix`` or a joined channel): the runtime
    verifies it and answers with :meth:`SocketProtocol.reply_refresh`."""

    join_ref: Ref
    """The joined channel's join_ref; None on topic ``phoenix``."""
    ref: Ref
    topic: str
    payload: Any


@dataclass
class Stats:
    """Counters the runtime exports as metrics."""

    stale_dropped: int = 0
    unmatched: int = 0
    rate_limited: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Client messages refused by a size limit, by the limit's config name."""


def limit_reply(reason: str, limit: str, maximum: int) -> dict[str, Any]:
    """The error response of a refusal by a configured limit: what, which setting, how much."""
    return {"reason": reason, "limit": limit, "max": maximum}


_CHANNEL_CHANGES = frozenset((PHX_JOIN, PHX_LEAVE, ACCESS_TOKEN))
"""The events :meth:`SocketProtocol.receive_message` may answer with a Join, a Leave or a Refresh."""


def _longer_than(name: str, limit: int) -> bool:
    """Whether ``name`` has more than ``limit`` bytes of UTF-8 (encoded only when it may)."""
    return len(name) > limit or (len(name) * 4 > limit and len(name.encode("utf-8", "surrogatepass")) > limit)


class SocketProtocol:
    """The per-connection state machine.

    Args:
        serializer: the negotiated wire format.
        router: maps a topic to its route; a topic without one is "unmatched".
        max_channels: channels one socket may have joined at once.
        max_name_length: bytes of a topic or event name; a longer one gets an error reply.
        max_join_payload: bytes of a ``phx_join`` frame; a larger one gets an error reply.
    """

    __slots__ = ("serializer", "router", "max_channels", "max_name_length", "max_join_payload", "rate_limit",
                 "_refused_in_a_row", "channels", "stats", "_out")

    def __init__(
        self, serializer: Serializer, router: Router[Any], *, max_channels: int = 100, stats: Stats | None = None,
        rate_limit: TokenBucket | None = None, max_name_length: int = 255, max_join_payload: int = 64 * 1024,
    ):
        self.serializer = serializer
        self.router = router
        self.max_channels = max_channels
        self.max_name_length = max_name_length
        self.max_join_payload = max_join_payload
        self.rate_limit = rate_limit
        """Client messages beyond it get a "rate limited" reply; a flood past twice the burst closes."""
        self._refused_in_a_row = 0
        self.channels: dict[str, ChannelState] = {}
        self.stats = Stats() if stats is None else stats
        """Counters; the runtime passes one object shared by every socket, for server-wide metrics."""
        self._out: list[bytes] | tuple[()] = ()
        """Frames encoded since the last :meth:`data_to_send`; an empty tuple, not an empty list,
        between calls (an idle server holds one per client)."""

    # -- input -------------------------------------------------------------------------------

    def receive(self, data: str | bytes, now: float = 0.0) -> list[Join | Deliver | Leave | Refresh]:
        """Process one inbound frame; ``now`` (seconds, any epoch) feeds the rate limit.

        Raises:
            ProtocolViolation: the frame cannot be decoded, or the client floods; the runtime
                closes the connection.
        """
        return self.receive_message(self.serializer.decode(data), now, len(data))

    @staticmethod
    def settles(msg: Message) -> bool:
        """Whether :meth:`receive_message` can give ``msg`` nothing but client events (:class:`Deliver`)
        and the socket's own replies: no :class:`Join`, :class:`Leave` or :class:`Refresh`, the
        actions whose handling a runtime may have to wait for (a join's callback, a leave's
        terminate). Decided on the event alone, before anything is changed."""
        return msg.event not in _CHANNEL_CHANGES

    def receive_message(self, msg: Message, now: float = 0.0, size: int = 0) -> list[Join | Deliver | Leave | Refresh]:
        """Dispatch a decoded message in Phoenix's precedence (PROTOCOL.md §3, rules 1-7); ``size``
        is its frame's, for the join payload limit."""
        topic, event = msg.topic, msg.event
        if topic == PHOENIX_TOPIC and event == HEARTBEAT:
            self._queue(Reply(None, msg.ref, topic, "ok", {}))
            return []
        channel = self.channels.get(topic)
        # A joined channel's topic passed this check at its join: only an unknown topic is measured.
        if _longer_than(event, self.max_name_length) or (channel is None and _longer_than(topic, self.max_name_length)):
            # Before anything keeps the name: a topic or event is a key in tables, logs, metrics
            # and the admin plane's traffic, so its size is bounded where it enters.
            self._refuse(msg, msg.join_ref, limit_reply("name too long", "server.max_name_length", self.max_name_length))
            return []
        if self.rate_limit is not None and event != PHX_LEAVE and self._limited(msg, channel, now):
            return []
        if channel is not None:
            if event == PHX_JOIN:
                return self._join(msg, channel, size)
            join_ref = msg.join_ref
            # Equal strings (phoenix.js) are the same ref without a call; any other pair is
            # compared as Phoenix does (same_ref: the integer 1 is not the string "1").
            if join_ref is not None and (join_ref.__class__ is not str or join_ref != channel.join_ref) and not same_ref(join_ref, channel.join_ref):
                # Stale incarnation (§3.5): its client already gave it up and ignores any answer.
                # Dropped as Phoenix 1.8.3+ does, but visible to operators (PROTOCOL.md §11).
                self.stats.stale_dropped += 1
                log.debug("dropped %s on %s: stale join_ref %s (current %s)", shown(event), shown(topic), shown(join_ref), shown(channel.join_ref))
                return []
            if event == PHX_LEAVE:
                return [self._leave(channel, msg.ref)]
            if event == ACCESS_TOKEN:
                return [Refresh(channel.reply_join_ref, msg.ref, topic, msg.payload)]
            return [Deliver(channel, msg.ref, event, msg.payload)]
        if topic == PHOENIX_TOPIC and event == ACCESS_TOKEN:
            return [Refresh(None, msg.ref, topic, msg.payload)]
        if event == PHX_JOIN:
            return self._join(msg, None, size)
        if event == PHX_LEAVE:
            self._queue(Reply(msg.join_ref, msg.ref, topic, "ok", {}))
            return []
        self._unmatched(msg)
        return []

    def _limited(self, msg: Message, channel: ChannelState | None, now: float) -> bool:
        """Refuse ``msg`` with a reply when the bucket is empty; heartbeats and leaves never count."""
        assert self.rate_limit is not None
        wait = self.rate_limit.take(now)
        if not wait:
            self._refused_in_a_row = 0
            return False
        self.stats.rate_limited += 1
        self._refused_in_a_row += 1
        if self._refused_in_a_row > 2 * self.rate_limit.burst:
            raise ProtocolViolation("flood: rate limit exceeded (server.rate_limit); slow down and reconnect", 1008)
        join_ref = channel.reply_join_ref if channel is not None else msg.join_ref
        response = {"reason": "rate limited", "limit": "server.rate_limit", "retry_after_ms": max(1, round(wait * 1000))}
        self._queue(Reply(join_ref, msg.ref, msg.topic, "error", response))
        return True

    def _join(self, msg: Message, replacing: ChannelState | None, size: int) -> list[Join | Deliver | Leave]:
        route = self.router.match(msg.topic)
        if route is None:
            self._unmatched(msg)
            return []
        if msg.join_ref is None and msg.ref is None:
            self._queue(Reply(None, msg.ref, msg.topic, "error", {"reason": "join requires a ref"}))
            return []
        if size > self.max_join_payload:
            # Checked on the frame, as read: a join payload may be kept for the channel's life. A
            # refused rejoin leaves the joined channel as it was (refused before it is replaced).
            self._refuse(msg, msg.join_ref, limit_reply("join payload too large", "server.max_join_payload", self.max_join_payload))
            return []
        actions: list[Join | Deliver | Leave] = []
        if replacing is not None:
            self._remove(replacing)
            actions.append(Leave(replacing, LeaveReason.DUPLICATE_JOIN))
        elif len(self.channels) >= self.max_channels:
            self._refuse(msg, msg.join_ref, limit_reply("too many channels joined", "server.max_channels", self.max_channels))
            return []
        actions.append(Join(msg.topic, msg.join_ref, msg.ref, msg.payload, route, replaced=replacing))
        return actions

    def _leave(self, channel: ChannelState, ref: Ref) -> Leave:
        self._remove(channel)
        # Phoenix: the channel answers (its join_ref), then the socket closes it (the table's).
        self._queue(Reply(channel.reply_join_ref, ref, channel.topic, "ok", {}))
        self._queue(Message(channel.join_ref, channel.join_ref, channel.topic, PHX_CLOSE, {}))
        return Leave(channel, LeaveReason.LEFT)

    def _refuse(self, msg: Message, join_ref: Ref, response: dict[str, Any]) -> None:
        self.stats.refused[response["limit"]] += 1
        self._queue(Reply(join_ref, msg.ref, msg.topic, "error", response))

    def _unmatched(self, msg: Message) -> None:
        self.stats.unmatched += 1
        self._queue(Reply(None, msg.ref, msg.topic, "error", {"reason": "unmatched topic"}))

    # -- outcomes reported by the runtime ----------------------------------------------------

    def join_succeeded(self, join: Join, response: Any = None, handler: Any = None) -> ChannelState:
        """Record the channel and queue the ok reply (then the replaced channel's phx_close)."""
        # Encode first: a response the serializer refuses raises before anything is recorded.
        self._queue(Reply(join.join_ref, join.ref, join.topic, "ok", {} if response is None else response))
        channel = ChannelState(join.topic, join.join_ref, join.channel_join_ref, join.route, handler)
        self.channels[join.topic] = channel
        self._close_replaced(join)
        return channel

    def join_refused(self, join: Join, response: Any) -> None:
        """Queue the error reply; nothing is recorded and no phx_close is sent."""
        self._queue(Reply(join.join_ref, join.ref, join.topic, "error", response))
        self._close_replaced(join)

    def join_crashed(self, join: Join) -> None:
        self.join_refused(join, {"reason": "join crashed"})

    def _close_replaced(self, join: Join) -> None:
        if join.replaced is not None:
            old = join.replaced
            self._queue(Message(old.join_ref, old.join_ref, old.topic, PHX_CLOSE, {}))

    def reply(self, channel: ChannelState, ref: Ref, status: str, response: Any) -> None:
        """Answer a client message of ``channel``; dropped if the channel has stopped since."""
        if not channel.closed:
            self._queue(Reply(channel.reply_join_ref, ref, channel.topic, status, response))

    def push(self, channel: ChannelState, event: str, payload: Any) -> None:
        """Send ``event`` to this channel's client only: ``[J, null, topic, event, payload]``."""
        if not channel.closed:
            self._queue(Message(channel.reply_join_ref, None, channel.topic, event, payload))

    def notify(self, event: str, payload: Any) -> None:
        """Send ``event`` to the socket itself, on topic ``phoenix`` (no channel): ``[null, null,
        "phoenix", event, payload]``; phoenix.js shows it to ``socket.onMessage``."""
        self._queue(Message(None, None, PHOENIX_TOPIC, event, payload))

    def reply_refresh(self, refresh: Refresh, status: str, response: Any) -> None:
        """Answer an ``access_token`` event where it was sent."""
        self._queue(Reply(refresh.join_ref, refresh.ref, refresh.topic, status, response))

    def crash(self, channel: ChannelState) -> Leave | None:
        """The handler raised: queue phx_error and drop the channel (the client may rejoin)."""
        if channel.closed:
            return None
        self._remove(channel)
        self._queue(Message(channel.join_ref, channel.join_ref, channel.topic, PHX_ERROR, {"reason": "channel_crash"}))
        return Leave(channel, LeaveReason.CRASHED)

    def stop(self, channel: ChannelState) -> Leave | None:
        """The handler asked to stop normally: queue phx_close and drop the channel."""
        if channel.closed:
            return None
        self._remove(channel)
        self._queue(Message(channel.join_ref, channel.join_ref, channel.topic, PHX_CLOSE, {}))
        return Leave(channel, LeaveReason.STOPPED)

    def close_all(self) -> list[Leave]:
        """The connection is gone: every channel stops, nothing is sent."""
        leaves = [Leave(channel, LeaveReason.CLOSED) for channel in self.channels.values()]
        for leave in leaves:
            leave.channel.closed = True
        self.channels.clear()
        return leaves

    # -- output ------------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """The encoded frames queued since the last call; the queue empties."""
        out = self._out
        if not out:
            return []
        self._out = ()
        return out  # type: ignore[return-value]  # a list once it holds a frame

    def _queue(self, message: Message | Reply) -> None:
        frame = self.serializer.encode(message)
        if self._out:
            self._out.append(frame)  # type: ignore[union-attr]  # a list once it holds a frame
        else:
            self._out = [frame]

    def _remove(self, channel: ChannelState) -> None:
        channel.closed = True
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
