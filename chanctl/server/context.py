"""ChannelContext: the runtime's :class:`~chanctl.channel.ChannelSocket`, built by the connection at join.

Phoenix hands each channel a ``Socket`` (topic, join_ref, assigns, and the pubsub server behind
``broadcast``); this is that object for chanctl. It is the only way a handler reaches the server:
push and reply go to its connection, broadcasts to the pubsub, presence to the tracker, timers to
the event loop, so :mod:`chanctl.channel` imports nothing of the runtime and the connection writes
nothing into a handler but :attr:`Channel.socket <chanctl.channel.Channel.socket>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chanctl.channel import Meta, Outcome
from chanctl.errors import PresenceError
from chanctl.protocol.messages import Ref
from chanctl.protocol.socket import ChannelState, Join
from chanctl.server import realtime

if TYPE_CHECKING:
    from chanctl.server.connection import Connection

__all__ = ["ChannelContext"]


class ChannelContext:
    """One join's view of the server. ``channel`` is set once the join succeeded."""

    # Slots: one per joined channel, held for its life (benchmarks/README.md, idle RSS).
    __slots__ = ("topic", "captures", "join_ref", "user", "assigns", "socket_id", "ref", "presence_key", "channel",
                 "_connection", "_realtime", "_timers")

    def __init__(self, connection: Connection, join: Join):
        self.topic = join.topic
        self.captures = join.route.captures
        self.join_ref: Ref = join.channel_join_ref
        self.user = connection.user
        self.assigns = connection.assigns
        self.socket_id = connection.socket_id
        self.ref: Ref = None
        """Set by the connection while ``handle_in`` runs."""
        self.presence_key: str | None = None
        self.channel: ChannelState | None = None
        """The protocol's state of this channel, once joined."""
        self._connection = connection
        self._realtime = getattr(join.route.target, "realtime", False)
        """A ``realtime: true`` topic: its broadcasts go out in Supabase's envelope."""
        self._timers: set[asyncio.TimerHandle] | None = None

    @property
    def joined(self) -> bool:
        return self.channel is not None and not self.channel.closed

    # -- to the client and the topic ---------------------------------------------------------

    def push(self, event: str, payload: Any) -> None:
        if self.channel is not None:
            self._connection.push(self.channel, event, payload)

    def reply(self, ref: Ref, outcome: Outcome) -> None:
        if self.channel is not None:
            self._connection.reply(self.channel, ref, outcome)

    def broadcast(self, event: str, payload: Any) -> None:
        if self._realtime:
            event, payload = realtime.outbound(event, payload)
        self._connection.server.pubsub.broadcast(self.topic, event, payload)

    def broadcast_from(self, event: str, payload: Any) -> None:
        if self._realtime:
            event, payload = realtime.outbound(event, payload)
        self._connection.server.pubsub.broadcast(self.topic, event, payload, exclude=self._connection)

    def publish(self, topic: str, event: str, payload: Any) -> None:
        self._connection.server.publish(topic, event, payload)

    def stop(self) -> None:
        if self.channel is not None:
            self._connection.stop(self.channel)

    # -- messages from the server ------------------------------------------------------------

    def send_after(self, seconds: float, message: Any) -> asyncio.TimerHandle:
        if self._timers is None:
            self._timers = set()
        timers = self._timers

        def fire() -> None:
            timers.discard(timer)
            if self.channel is not None and not self.channel.closed:
                self._connection.queue_info(self.channel, message)

        timer = asyncio.get_running_loop().call_later(seconds, fire)
        timers.add(timer)
        return timer

    def send_info(self, topic: str, message: Any) -> int:
        return self._connection.server.send_info(topic, message)

    def allow_unsent(self, size: int) -> None:
        """See :meth:`Connection.allow_unsent`; for the server's own channels (the admin plane),
        not part of :class:`~chanctl.channel.ChannelSocket`."""
        self._connection.allow_unsent(size)

    def cancel_timers(self) -> None:
        """The channel stopped: its timers go with it."""
        for timer in self._timers or ():
            timer.cancel()
        self._timers = None

    # -- presence ----------------------------------------------------------------------------

    def track(self, key: str, meta: Meta, *, limited: bool = False) -> str:
        """``limited``: the client asked for it (chanctl.server.realtime), so ``presence.max_updates`` applies."""
        connection = self._connection
        return connection.server.presence.track(self._joined(), key, meta, connection if limited else None)

    def update(self, key: str, meta: Meta | Callable[[Meta], Meta]) -> str:
        return self._connection.server.presence.update(self._connection, self._joined(), key, meta)

    def untrack(self, key: str | None = None) -> None:
        self._connection.server.presence.untrack(self._joined(), key)

    def presence_list(self) -> dict[str, dict[str, list[Meta]]]:
        return self._connection.server.presence.list(self.topic)

    def _joined(self) -> ChannelState:
        if self.channel is None:
            raise PresenceError("not joined")
        return self.channel
