"""The Python channel API: subclass :class:`Channel` for logic the YAML cannot say.

A handler has Phoenix's callbacks, async: ``join``, ``handle_in``, ``handle_info``, ``terminate``,
and the four directions at hand: ``reply`` (answer the client message being handled), ``push``
(to this client), ``broadcast`` (to every subscriber, this client included) and ``broadcast_from``
(to every subscriber but this client). One instance serves one (connection, topic) incarnation.

A handler sees the server through :attr:`Channel.socket`, a :class:`ChannelSocket` that the
connection builds at join, as Phoenix hands a channel its ``Socket``: topic, join_ref, assigns and
user, and the directions, timers and presence, all through it. Nothing of the runtime (the
connection, the pubsub, the presence tracker) is reachable from here.
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

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import asyncio

    from chanctl.protocol.messages import Ref
    from chanctl.protocol.socket import LeaveReason

__all__ = ["Channel", "ChannelSocket", "Outcome", "error", "ok"]


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


Meta = dict[str, Any]


class ChannelSocket(Protocol):
    """One joined channel as its handler sees the server: Phoenix's ``Socket`` for a channel.

    The connection builds one per join and sets it as :attr:`Channel.socket` before ``join`` runs.
    Until the join succeeds (and after the channel stops), ``push``, ``reply`` and ``stop`` do
    nothing and the presence calls raise ``PresenceError("not joined")``.
    """

    topic: str
    """The joined topic, e.g. ``room:42``."""
    captures: dict[str, str]
    """The topic pattern's named captures, e.g. ``{"id": "42"}`` for ``room:{id}``."""
    join_ref: Ref
    """The ref of the join that made this channel (every frame of the channel carries it), as the
    client sent it: phoenix.js sends strings, other clients integers (any JSON value is kept)."""
    user: dict[str, Any]
    """The connection's verified token claims; ``user["id"]`` is always set."""
    assigns: dict[str, Any]
    """Per-connection storage shared by every channel of the connection (Phoenix socket assigns)."""
    socket_id: str | None
    """The connection's socket id (``auth.socket_id`` filled from the claims), None when anonymous."""
    ref: Ref
    """The ref of the client message being handled (as the client sent it), else None."""
    presence_key: str | None
    """The key this channel was tracked under on join (topics with ``presence:``), else None."""

    @property
    def joined(self) -> bool:
        """True from the successful join until the channel stops."""
        ...

    def push(self, event: str, payload: Any) -> None: ...
    def reply(self, ref: Ref, outcome: Outcome) -> None: ...
    def broadcast(self, event: str, payload: Any) -> None: ...
    def broadcast_from(self, event: str, payload: Any) -> None: ...
    def publish(self, topic: str, event: str, payload: Any) -> None: ...
    def stop(self) -> None: ...
    def send_after(self, seconds: float, message: Any) -> asyncio.TimerHandle: ...
    def send_info(self, topic: str, message: Any) -> int: ...
    def track(self, key: str, meta: Meta) -> str: ...
    def update(self, key: str, meta: Meta | Callable[[Meta], Meta]) -> str: ...
    def untrack(self, key: str | None = None) -> None: ...
    def presence_list(self) -> dict[str, dict[str, list[Meta]]]: ...


class Channel:
    """Base class of channel handlers. Override the callbacks you need."""

    socket: ChannelSocket
    """This channel's socket, set by the server before ``join`` runs."""
    data: dict[str, Any] = {}
    """The config's static facts (``data:`` and ``data_file:``), as the rules see them."""

    @property
    def topic(self) -> str:
        """The joined topic, e.g. ``room:42``."""
        return self.socket.topic

    @property
    def captures(self) -> dict[str, str]:
        """The topic pattern's named captures, e.g. ``{"id": "42"}`` for ``room:{id}``."""
        return self.socket.captures

    @property
    def user(self) -> dict[str, Any]:
        """The connection's verified token claims; ``user["id"]`` is always set."""
        return self.socket.user

    @property
    def assigns(self) -> dict[str, Any]:
        """Per-connection storage shared by every channel of the connection (Phoenix socket assigns)."""
        return self.socket.assigns

    @property
    def presence_key(self) -> str | None:
        """The key this channel was tracked under on join (topics with ``presence:``), else None."""
        return self.socket.presence_key

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

    def push(self, event: str, payload: Any) -> None:
        """Send ``event`` to this channel's client only."""
        self.socket.push(event, payload)

    def broadcast(self, event: str, payload: Any) -> None:
        """Send ``event`` to every subscriber of the topic, this client included."""
        self.socket.broadcast(event, payload)

    def broadcast_from(self, event: str, payload: Any) -> None:
        """Send ``event`` to every subscriber of the topic except this client."""
        self.socket.broadcast_from(event, payload)

    def publish(self, topic: str, event: str, payload: Any) -> None:
        """Send ``event`` to every subscriber of another ``topic`` (Phoenix's ``Endpoint.broadcast``)."""
        self.socket.publish(topic, event, payload)

    # -- messages from the server ------------------------------------------------------------

    def send_after(self, seconds: float, message: Any) -> asyncio.TimerHandle:
        """Deliver ``message`` to this channel's :meth:`handle_info` in ``seconds``.

        Callable from ``join`` too (Phoenix's ``send(self(), :after_join)``). The timer is cancelled
        when the channel stops; cancel it earlier with the returned handle's ``cancel()``.
        """
        return self.socket.send_after(seconds, message)

    def send_info(self, topic: str, message: Any) -> int:
        """Deliver ``message`` to :meth:`handle_info` of every channel joined to ``topic`` on this
        server (this one included, if joined); returns how many."""
        return self.socket.send_info(topic, message)

    def stop(self) -> None:
        """Stop this channel normally (Phoenix's ``{:stop, :normal, ...}``): once the running callback
        has returned and its reply is sent, the client gets ``phx_close`` and ``terminate`` runs."""
        self.socket.stop()

    def socket_ref(self) -> Ref:
        """The ref of the client message being handled, for a later :meth:`reply`."""
        return self.socket.ref

    def reply(self, ref: Ref, outcome: Outcome) -> None:
        """Answer the client message ``ref`` (from :meth:`socket_ref`) after ``handle_in`` returned None."""
        self.socket.reply(ref, outcome)

    # -- presence (PROTOCOL.md §6) -----------------------------------------------------------

    def track(self, key: str | int, meta: Meta) -> str:
        """Track this channel under ``key`` with ``meta``; returns the ``phx_ref``.

        Every member gets a ``presence_diff``; the presence goes when the channel stops.

        Raises:
            PresenceError: ``already_tracked`` (this channel tracks ``key``), ``not joined``.
        """
        return self.socket.track(str(key), meta)

    def update(self, key: str | int, meta: Meta | Callable[[Meta], Meta]) -> str:
        """Replace this channel's meta under ``key``, or transform it with a function; returns the new ``phx_ref``.

        Raises:
            PresenceError: ``nopresence``, ``not joined``, or ``too many presence updates`` past the
                topic's ``presence.max_updates``. Raised out of ``handle_in`` it becomes an error reply.
        """
        return self.socket.update(str(key), meta)

    def untrack(self, key: str | int | None = None) -> None:
        """Stop tracking ``key`` (every key of this channel when None); a no-op if not tracked."""
        self.socket.untrack(None if key is None else str(key))

    def presence_list(self) -> dict[str, dict[str, list[Meta]]]:
        """Who is on this topic: ``{key: {"metas": [...]}}``, Phoenix's ``Presence.list``."""
        return self.socket.presence_list()
