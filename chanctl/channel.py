"""The Python channel API: subclass :class:`Channel` for logic the YAML cannot say.

A handler has Phoenix's callbacks, async: ``join``, ``handle_in``, ``handle_info``, ``terminate``,
and the four directions at hand: ``reply`` (answer the client message being handled), ``push``
(to this client), ``broadcast`` (to every subscriber, this client included) and ``broadcast_from``
(to every subscriber but this client). One instance serves one (connection, topic) incarnation.
Messages from elsewhere in the server reach ``handle_info``: timers set with :meth:`send_after`
(cancelled when the channel stops) and :meth:`send_info` publishes to a topic's channels. They run
in order with the connection's client events, never concurrently with another callback of it.

    class Counter(Channel):
        async def join(self, params):
            return ok({"count": 0})

        async def handle_in(self, event, payload):
            if event == "inc":
                self.broadcast("count", {"by": self.user["id"]})
                return ok()
            return error({"reason": "unknown event", "event": event})
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

from chanctl.errors import PresenceError

if TYPE_CHECKING:
    import asyncio

    from chanctl.protocol.socket import ChannelState, LeaveReason
    from chanctl.server.behaviours import CompiledTopic
    from chanctl.server.connection import Connection

__all__ = ["Channel", "Outcome", "error", "ok"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A reply status and response, returned by ``join`` and ``handle_in``."""

    status: str
    response: Any = None


def ok(response: Any = None) -> Outcome:
    """An ok reply; ``response`` defaults to ``{}``."""
    return Outcome("ok", {} if response is None else response)


def error(response: Any) -> Outcome:
    """An error reply; say why, e.g. ``{"reason": "unauthorized"}`` or ``{"errors": {...}}``."""
    return Outcome("error", response)


class Channel:
    """Base class of channel handlers. Override the callbacks you need."""

    topic: str
    """The joined topic, e.g. ``room:42``."""
    captures: dict[str, str]
    """The topic pattern's named captures, e.g. ``{"id": "42"}`` for ``room:{id}``."""
    user: dict[str, Any]
    """The connection's verified token claims; ``user["id"]`` is always set."""
    assigns: dict[str, Any]
    """Per-connection storage shared by every channel of the connection (Phoenix socket assigns)."""
    data: dict[str, Any] = {}
    """The config's static facts (``data:`` and ``data_file:``), as the rules see them."""

    presence_key: str | None = None
    """The key this channel was tracked under on join (topics with ``presence:``), else None."""

    _connection: Connection
    _state: ChannelState | None = None
    _ref: str | None = None
    _join_gate: CompiledTopic | None = None
    """The topic's YAML join rule, checked before this handler's ``join`` when both are given."""
    _timers: set[asyncio.TimerHandle] | None = None

    def _bind(self, connection: Connection, topic: str, captures: dict[str, str]) -> None:
        self._connection = connection
        self.topic = topic
        self.captures = captures
        self.user = connection.user
        self.assigns = connection.assigns

    async def _run_join(self, params: Any) -> Outcome | None:
        if self._join_gate is not None:
            refused = self._join_gate.authorize_join(self.user, self.topic, self.captures, params)
            if refused is not None:
                return refused
        return await self.join(params)

    def _stop(self) -> None:
        """The channel stopped: cancel its timers."""
        for timer in self._timers or ():
            timer.cancel()
        self._timers = None

    # -- callbacks ---------------------------------------------------------------------------

    async def join(self, params: Any) -> Outcome | None:
        """Decide whether the client may join; None means ``ok({})``. Raising replies "join crashed"."""
        return None

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        """Handle a client event. Return the reply, or None to reply later with :meth:`reply`.

        Raising stops the channel with ``phx_error`` (the client rejoins).
        """
        return error({"reason": "unknown event", "event": event})

    async def handle_info(self, message: Any) -> None:
        """Handle a message from elsewhere in the server (a timer, a server-side publish)."""

    async def terminate(self, reason: LeaveReason) -> None:
        """Clean up when the channel stops (left, closed, crashed). Not run on a duplicate join."""

    intercept: ClassVar[Collection[str]] = ()
    """Events whose broadcasts pass through :meth:`handle_out` for this channel's client instead of
    going out unchanged (Phoenix's ``intercept``); each costs one encode per subscriber."""

    def handle_out(self, event: str, payload: Any) -> None:
        """Decide what this client gets for an intercepted broadcast: :meth:`push` a (modified)
        payload, or nothing. Synchronous, so a broadcast still never waits on a subscriber.
        Raising stops the channel with ``phx_error``."""
        self.push(event, payload)

    # -- the four directions -----------------------------------------------------------------

    def push(self, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to this channel's client only."""
        if self._state is not None:
            self._connection.push(self._state, event, payload)

    def broadcast(self, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to every subscriber of the topic, this client included."""
        self._connection.server.pubsub.broadcast(self.topic, event, payload)

    def broadcast_from(self, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to every subscriber of the topic except this client."""
        self._connection.server.pubsub.broadcast(self.topic, event, payload, exclude=self._connection)

    def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to every subscriber of another ``topic`` (Phoenix's ``Endpoint.broadcast``)."""
        self._connection.server.pubsub.broadcast(topic, event, payload)

    # -- messages from the server ------------------------------------------------------------

    def send_after(self, seconds: float, message: Any) -> asyncio.TimerHandle:
        """Deliver ``message`` to this channel's :meth:`handle_info` in ``seconds``.

        Callable from ``join`` too (Phoenix's ``send(self(), :after_join)``). The timer is cancelled
        when the channel stops; cancel it earlier with the returned handle's ``cancel()``.
        """
        import asyncio  # here, not at the top: `import chanctl` must not pull in asyncio (test_package)

        if self._timers is None:
            self._timers = set()
        timers = self._timers

        def fire() -> None:
            timers.discard(timer)
            if self._state is not None and not self._state.closed:
                self._connection.send_info(self._state, message)

        timer = asyncio.get_running_loop().call_later(seconds, fire)
        timers.add(timer)
        return timer

    def send_info(self, topic: str, message: Any) -> int:
        """Deliver ``message`` to :meth:`handle_info` of every channel joined to ``topic`` on this
        server (this one included, if joined); returns how many."""
        return self._connection.server.send_info(topic, message)

    def stop(self) -> None:
        """Stop this channel normally (Phoenix's ``{:stop, :normal, ...}``): once the running callback
        has returned and its reply is sent, the client gets ``phx_close`` and ``terminate`` runs."""
        if self._state is not None:
            self._connection.stop(self._state)

    def socket_ref(self) -> str | None:
        """The ref of the client message being handled, for a later :meth:`reply`."""
        return self._ref

    def reply(self, ref: str | None, outcome: Outcome) -> None:
        """Answer the client message ``ref`` (from :meth:`socket_ref`) after ``handle_in`` returned None."""
        if self._state is not None:
            self._connection.reply(self._state, ref, outcome)

    # -- presence (PROTOCOL.md §6) -----------------------------------------------------------

    def track(self, key: str | int, meta: dict[str, Any]) -> str:
        """Track this channel under ``key`` with ``meta``; returns the ``phx_ref``.

        Every member gets a ``presence_diff``; the presence goes when the channel stops.

        Raises:
            PresenceError: ``already_tracked`` (this channel tracks ``key``), ``not joined``.
        """
        return self._connection.server.presence.track(self._joined(), str(key), meta)

    def update(self, key: str | int, meta: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]) -> str:
        """Replace this channel's meta under ``key``, or transform it with a function; returns the new ``phx_ref``.

        Raises:
            PresenceError: ``nopresence``, ``not joined``, or ``too many presence updates`` past the
                topic's ``presence.max_updates``. Raised out of ``handle_in`` it becomes an error reply.
        """
        return self._connection.server.presence.update(self._connection, self._joined(), str(key), meta)

    def untrack(self, key: str | int | None = None) -> None:
        """Stop tracking ``key`` (every key of this channel when None); a no-op if not tracked."""
        self._connection.server.presence.untrack(self._joined(), None if key is None else str(key))

    def presence_list(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Who is on this topic: ``{key: {"metas": [...]}}``, Phoenix's ``Presence.list``."""
        return self._connection.server.presence.list(self.topic)

    def _joined(self) -> ChannelState:
        if self._state is None:
            raise PresenceError("not joined")
        return self._state
