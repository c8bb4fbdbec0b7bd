"""The Phoenix client socket without I/O: refs, pending replies, channel states, rejoin decisions.

As websockets' ``ClientProtocol`` is to its asyncio connection, :class:`ClientProtocol` is to
:class:`chanctl.client.Client`: frames and connection events go in, frames to send and events
come out, and the caller owns the socket, the clock and the futures. Tests drive it by feeding
frames (tests/client/test_protocol.py)::

    proto = ClientProtocol()
    proto.connection_opened()
    ref = proto.join("room:42", {})
    proto.data_to_send()                 # [b'["1","1","room:42","phx_join",{}]']
    proto.receive_data('["1","1","room:42","phx_reply",{"status":"ok","response":{}}]')
    proto.events_received()              # [Replied("1", Reply(...))]

It decides what phoenix.js decides (PROTOCOL.md §8): a push made before its channel is joined waits
and goes out once it is; a ``phx_error`` rejoins after 1, 2, 5, 10 s (:class:`RejoinDue`, which
the caller turns into a timer and then :meth:`ClientProtocol.rejoin`); a lost socket reconnects
after phoenix.js's backoff and rejoins every wanted channel with a new join_ref; a frame of an
older join (stale join_ref) is dropped. A handshake refused with HTTP 403 (a bad or expired token)
is final: reconnecting would be refused the same way.

Status events (:class:`Status` and its kinds) say what the socket is doing, typed, so that a
dashboard switches on the kind, and ``str()`` of each is a line for a terminal.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from chanctl.client.presence import Presence, PresenceChange
from chanctl.errors import ClientError, ConnectionLost, ConnectRefused, JoinRefused, ProtocolViolation
from chanctl.protocol.messages import (
    ACCESS_TOKEN,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    Message,
    Reply,
)
from chanctl.protocol.serializers import ClientSerializer, V2Json

__all__ = [
    "RECONNECT_AFTER", "REJOIN_AFTER", "ChannelErrored", "ChannelState", "ClientProtocol", "Closed", "Connecting",
    "Event", "Failed", "FrameIgnored", "HeartbeatTimeout", "Open", "Received", "Reconnecting", "RecoveryFailed",
    "RefreshDue", "Refused", "RejoinDue", "RejoinRefused", "Rejoined", "Replied", "Status", "TokenExpiring",
    "TokenRefreshRefused", "TokenRefreshed", "stop_error",
]

RECONNECT_AFTER = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0)
"""phoenix.js ``reconnectAfterMs``, in seconds: the last value repeats."""
REJOIN_AFTER = (1.0, 2.0, 5.0, 10.0)
"""phoenix.js ``rejoinAfterMs``, in seconds: the last value repeats."""
TOKEN_EXPIRING = "token_expiring"
"""The server's push on topic ``phoenix`` ahead of the socket token's expiry."""
FINAL_STATUSES = frozenset({403})
"""Handshake refusals that reconnecting cannot cure: 403 is a token the server will refuse again."""


def _backoff(schedule: tuple[float, ...], attempt: int) -> float:
    return schedule[min(attempt, len(schedule) - 1)]


class ChannelState(enum.StrEnum):
    """phoenix.js's channel states; a ``str``, so ``channel.state == "joined"`` reads as before."""

    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    ERRORED = "errored"
    """Waiting to rejoin (after ``phx_error``, a refused or timed-out rejoin, or a lost socket)."""


# -- status events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """What the socket or one of its channels is doing; ``str()`` is a line for a terminal."""

    @property
    def routine(self) -> bool:
        """Part of every healthy start (connecting, the first open): not worth a line of its own."""
        return False


@dataclass(frozen=True)
class Connecting(Status):
    url: str
    attempt: int = 0
    """0 for the first connect; n for the n-th reconnect attempt."""

    def __str__(self) -> str:
        return f"connecting to {self.url}" if not self.attempt else f"reconnecting to {self.url} (attempt {self.attempt})"

    @property
    def routine(self) -> bool:
        return True


@dataclass(frozen=True)
class Open(Status):
    url: str
    reconnected: bool = False

    def __str__(self) -> str:
        return "reconnected" if self.reconnected else f"connected to {self.url}"

    @property
    def routine(self) -> bool:
        return not self.reconnected


@dataclass(frozen=True)
class Closed(Status):
    """The socket closed: ``code`` and ``reason`` from the close frame (None: no close frame)."""

    code: int | None
    reason: str = ""

    def __str__(self) -> str:
        return f"disconnected (close code {self.code})" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Refused(Status):
    """The server answered the handshake with an HTTP error; ``final`` when retrying cannot help."""

    status: int
    body: str = ""
    final: bool = False

    def __str__(self) -> str:
        what = f"refused: HTTP {self.status}{' ' + self.body if self.body else ''}"
        return what + ("; not retrying" if self.final else "")


@dataclass(frozen=True)
class Reconnecting(Status):
    """The next connect attempt (1-based) after ``wait`` seconds; ``reason`` is why the last failed."""

    attempt: int
    wait: float
    reason: str = ""

    def __str__(self) -> str:
        because = f" ({self.reason})" if self.reason else ""
        return f"reconnecting in {self.wait:g} s, attempt {self.attempt}{because}"


@dataclass(frozen=True)
class HeartbeatTimeout(Status):
    def __str__(self) -> str:
        return "heartbeat timeout; closing the socket"


@dataclass(frozen=True)
class FrameIgnored(Status):
    reason: str

    def __str__(self) -> str:
        return f"ignored a frame: {self.reason}"


@dataclass(frozen=True)
class ChannelErrored(Status):
    topic: str
    payload: Any

    def __str__(self) -> str:
        return f"{self.topic}: channel error {self.payload}; rejoining"


@dataclass(frozen=True)
class Rejoined(Status):
    topic: str

    def __str__(self) -> str:
        return f"{self.topic}: rejoined"


@dataclass(frozen=True)
class RejoinRefused(Status):
    topic: str
    response: Any

    def __str__(self) -> str:
        return f"{self.topic}: rejoin refused: {self.response}"


@dataclass(frozen=True)
class RecoveryFailed(Status):
    """A rejoin asked for the broadcasts after ``since`` and the topic's history no longer has them."""

    topic: str
    since: Any
    offset: int

    def __str__(self) -> str:
        return (f"{self.topic}: could not recover the broadcasts missed since {self.since} "
                f"(no longer in the server's history); continuing from offset {self.offset}")


@dataclass(frozen=True)
class TokenExpiring(Status):
    """The server warned that the socket's token expires and there is no way to mint another."""

    expires_in: Any

    def __str__(self) -> str:
        return f"the token expires in {self.expires_in}s and cannot be refreshed; the server will close the socket"


@dataclass(frozen=True)
class TokenRefreshed(Status):
    expires_in: Any

    def __str__(self) -> str:
        return f"token refreshed; it expires in {self.expires_in}s"


@dataclass(frozen=True)
class TokenRefreshRefused(Status):
    response: Any

    def __str__(self) -> str:
        return f"token refresh refused: {self.response}"


def stop_error(stopped: Status | None) -> ClientError:
    """The error that says why a socket stopped for good (:attr:`ClientProtocol.stopped`): a final
    refusal is ConnectRefused (a 403 on reconnect: exit 3 in the CLI), a close is ConnectionLost
    with the close frame's code and reason."""
    if isinstance(stopped, Refused):
        return ConnectRefused(stopped.status, stopped.body)
    if isinstance(stopped, Closed):
        return ConnectionLost(stopped.code, stopped.reason)
    return ConnectionLost()


# -- what the caller acts on ------------------------------------------------------------------


@dataclass(frozen=True)
class Replied:
    """The reply to the request sent with ``ref``."""

    ref: str
    reply: Reply


@dataclass(frozen=True)
class Failed:
    """The request sent (or waiting to be sent) with ``ref`` will get no reply."""

    ref: str
    error: ClientError


@dataclass(frozen=True)
class Received:
    """A push, broadcast, ``phx_error``/``phx_close`` or presence change for a channel."""

    topic: str
    event: Message | PresenceChange


@dataclass(frozen=True)
class RejoinDue:
    """Call :meth:`ClientProtocol.rejoin` for ``topic`` after ``wait`` seconds."""

    topic: str
    wait: float


@dataclass(frozen=True)
class RefreshDue:
    """The server warned that the token expires: mint one and call :meth:`ClientProtocol.refresh_token`."""

    expires_in: Any


Event = Status | Replied | Failed | Received | RejoinDue | RefreshDue
"""What :meth:`ClientProtocol.events_received` returns."""


@dataclass
class _Channel:
    topic: str
    params: Any
    state: ChannelState = ChannelState.CLOSED
    join_ref: str | None = None
    wanted: bool = False
    """The user joined and has not left: rejoin after errors and reconnects."""
    rejoined: bool = False
    """The current join is a rejoin (its reply is a status event, not an answer to anyone)."""
    attempt: int = 0
    presence: Presence = field(init=False)
    waiting: list[Message] = field(default_factory=list)
    """Pushes made before the join completed, with their refs, sent once it does."""
    position: dict[str, Any] | None = None
    """``{"offset": N, "epoch": E}`` of the last broadcast seen on a topic with history; a rejoin
    asks the server for everything after it (``since``)."""
    since: Any = None
    """The ``since`` the current join asked with."""

    def __post_init__(self) -> None:
        self.presence = Presence(self.topic)


class ClientProtocol:
    """One Phoenix client socket's state: no I/O, no clock, no futures.

    Args:
        serializer: the client's half of a serializer (V2 JSON and binary by default; V1 objects).
        reconnect: reconnect after the socket drops; False makes any close final.
        url: only named in status events.
    """

    def __init__(self, serializer: ClientSerializer | None = None, *, reconnect: bool = True, url: str = ""):
        self.serializer: ClientSerializer = serializer if serializer is not None else V2Json()
        self.reconnect = reconnect
        self.url = url
        self.open = False
        """Whether the socket is open (between :meth:`connection_opened` and :meth:`connection_closed`)."""
        self.stopped: Status | None = None
        """The status that ended the socket for good (a final refusal, or a close without reconnect)."""
        self._refs = itertools.count(1)
        self._channels: dict[str, _Channel] = {}
        self._pending: dict[str, str | None] = {}
        """Refs sent and not yet answered -> the topic of a join, or None."""
        self._heartbeat: str | None = None
        self._refresh: str | None = None
        self.refreshable = False
        """Whether the caller can mint a fresh token: a ``token_expiring`` warning then becomes a
        :class:`RefreshDue`, else a :class:`TokenExpiring` status."""
        self._attempt = 0
        self._connected_before = False
        self._out: list[bytes] = []
        self._events: list[Event] = []

    # -- outputs ------------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Encoded frames to write, in order; the buffer empties on each call. A
        :class:`~chanctl.protocol.serializers.BinaryFrame` goes out as a binary frame."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[Event]:
        """Replies, failures, channel events, rejoin timers and status; empties on each call."""
        events, self._events = self._events, []
        return events

    def state(self, topic: str) -> ChannelState:
        channel = self._channels.get(topic)
        return ChannelState.CLOSED if channel is None else channel.state

    def join_ref(self, topic: str) -> str | None:
        channel = self._channels.get(topic)
        return None if channel is None else channel.join_ref

    def position(self, topic: str) -> dict[str, Any] | None:
        channel = self._channels.get(topic)
        return None if channel is None else channel.position

    def presence(self, topic: str) -> Presence | None:
        channel = self._channels.get(topic)
        return None if channel is None else channel.presence

    # -- the connection -----------------------------------------------------------------------

    def connecting(self) -> None:
        """The caller starts a handshake."""
        self._events.append(Connecting(self.url, self._attempt))

    def connection_opened(self) -> None:
        """The handshake succeeded: rejoin every wanted channel at once, as phoenix.js does."""
        self.open = True
        self._attempt = 0
        self._events.append(Open(self.url, reconnected=self._connected_before))
        self._connected_before = True
        for channel in list(self._channels.values()):
            if channel.wanted:
                self._send_join(channel, rejoin=True)

    def connection_failed(self, reason: str, status: int | None = None, body: str = "") -> float | None:
        """A handshake failed (``status``: the HTTP status a server refused it with).

        Returns:
            Seconds to wait before the next attempt, or None: stop (:attr:`stopped` says why).
        """
        if status is not None:
            refused = Refused(status, body, final=status in FINAL_STATUSES or not self.reconnect)
            self._events.append(refused)
            if refused.final:
                self._stop(refused)
                return None
        return self._next_attempt(reason)

    def connection_closed(self, code: int | None = None, reason: str = "", *, closing: bool = False) -> float | None:
        """The socket closed; ``closing`` when the caller closed it for good.

        Every request in flight fails with ConnectionLost and joined channels wait to rejoin.

        Returns:
            Seconds to wait before reconnecting, or None: stop.
        """
        self.open = False
        closed = Closed(code, reason)
        self._events.append(closed)
        self._heartbeat = None
        pending, self._pending = self._pending, {}
        for ref in pending:
            # With the close frame's code and reason: a 1009 (frame too big) is the answer to the push.
            self._events.append(Failed(ref, ConnectionLost(code, reason)))
        for channel in self._channels.values():
            if channel.state is not ChannelState.CLOSED:
                channel.state = ChannelState.ERRORED
        if closing or not self.reconnect:
            self._stop(closed)
            return None
        return self._next_attempt("")  # the Closed status just said why

    def _next_attempt(self, reason: str) -> float:
        wait = _backoff(RECONNECT_AFTER, self._attempt)
        self._attempt += 1
        self._events.append(Reconnecting(self._attempt, wait, reason))
        return wait

    def _stop(self, why: Status) -> None:
        self.stopped = why
        self.open = False
        for channel in self._channels.values():
            self._fail_waiting(channel, ConnectionLost())
            channel.wanted = False
            channel.state = ChannelState.CLOSED

    # -- requests -----------------------------------------------------------------------------

    def join(self, topic: str, params: Any = None) -> str:
        """Join ``topic`` (again, if it was joined: a new join_ref); returns the join's ref."""
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._channels[topic] = _Channel(topic, {} if params is None else params)
        elif params is not None:
            channel.params = params
        channel.wanted = True
        channel.attempt = 0
        return self._send_join(channel, rejoin=False)

    def push(self, topic: str, event: str, payload: Any = None) -> str:
        """Push ``event``; returns its ref. Before the join completes it waits, as in phoenix.js.

        Raises:
            ClientError: the channel was never joined, or was left.
        """
        channel = self._channels.get(topic)
        if channel is None or not (channel.wanted or channel.state is ChannelState.JOINED):
            raise ClientError(f"push {event!r} on {topic}: join the channel first")
        ref = self._make_ref()
        message = Message(channel.join_ref, ref, topic, event, {} if payload is None else payload)
        if channel.state is ChannelState.JOINED and self.open:
            self._send(message, None)
        else:
            channel.waiting.append(message)
        return ref

    def leave(self, topic: str) -> str | None:
        """Leave ``topic``; returns the leave's ref, or None when nothing needs sending."""
        channel = self._channels.pop(topic, None)
        if channel is None:
            return None
        self._fail_waiting(channel, ConnectionLost())
        sent = channel.state in (ChannelState.JOINED, ChannelState.JOINING) and self.open
        channel.wanted = False
        channel.state = ChannelState.CLOSED
        if not sent:
            return None
        ref = self._make_ref()
        self._send(Message(channel.join_ref, ref, topic, PHX_LEAVE, {}), None)
        return ref

    def heartbeat(self) -> bool:
        """Send a heartbeat; False (and no frame) when the previous one is still unanswered: the
        caller closes the socket, as phoenix.js does."""
        if self._heartbeat is not None:
            self._events.append(HeartbeatTimeout())
            return False
        if self.open:
            self._heartbeat = self._make_ref()
            self._send(Message(None, self._heartbeat, PHOENIX_TOPIC, HEARTBEAT, {}), None)
        return True

    def refresh_token(self, token: str) -> None:
        """Send a fresh token in band (``access_token`` on topic ``phoenix``)."""
        if self.open:
            self._refresh = self._make_ref()
            self._send(Message(None, self._refresh, PHOENIX_TOPIC, ACCESS_TOKEN, {"access_token": token}), None)

    def expire(self, ref: str) -> None:
        """The caller stopped waiting for ``ref``'s reply; a timed-out join rejoins with backoff."""
        topic = self._pending.pop(ref, None)
        for channel in self._channels.values():
            channel.waiting = [m for m in channel.waiting if m.ref != ref]
        channel = self._channels.get(topic) if topic is not None else None
        if channel is not None and channel.join_ref == ref and channel.state is ChannelState.JOINING:
            channel.state = ChannelState.ERRORED
            self._schedule_rejoin(channel)

    def rejoin(self, topic: str) -> None:
        """A :class:`RejoinDue` timer fired: rejoin if the channel still waits for one."""
        channel = self._channels.get(topic)
        if channel is not None and channel.wanted and channel.state is ChannelState.ERRORED and self.open:
            self._send_join(channel, rejoin=True)

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, data: str | bytes) -> None:
        """One frame from the server (``str``: a text frame, ``bytes``: a binary frame)."""
        try:
            message = self.serializer.decode_from_server(data)
        except ProtocolViolation as exc:
            self._events.append(FrameIgnored(str(exc)))
            return
        if message.event == PHX_REPLY:
            self._reply(message)
            return
        if message.topic == PHOENIX_TOPIC and message.event == TOKEN_EXPIRING:
            left = message.payload.get("expires_in") if isinstance(message.payload, dict) else None
            self._events.append(RefreshDue(left) if self.refreshable else TokenExpiring(left))
            return
        channel = self._channels.get(message.topic)
        if channel is None or (message.join_ref is not None and message.join_ref != channel.join_ref):
            return  # a channel we left, or an older join's frame (phoenix.js drops those too)
        event = message.event
        if event in ("presence_state", "presence_diff"):
            for change in channel.presence.receive(event, message.payload):
                self._events.append(Received(channel.topic, change))
            return
        self._events.append(Received(channel.topic, message))
        if event == PHX_ERROR:
            channel.state = ChannelState.ERRORED
            self._events.append(ChannelErrored(channel.topic, message.payload))
            self._schedule_rejoin(channel)
            return
        payload = message.payload
        if isinstance(payload, dict) and isinstance(payload.get("offset"), int) and isinstance(payload.get("epoch"), str):
            channel.position = {"offset": payload["offset"], "epoch": payload["epoch"]}
        if event == PHX_CLOSE:
            channel.wanted = False
            channel.state = ChannelState.CLOSED
            self._fail_waiting(channel, ConnectionLost())
            del self._channels[channel.topic]

    def _reply(self, message: Message) -> None:
        ref = message.ref
        if ref is None:
            return
        if ref == self._heartbeat:
            self._heartbeat = None
            return
        if ref == self._refresh:
            self._refresh = None
            self._pending.pop(ref, None)
            refresh = Reply.from_message(message)
            response = refresh.response
            if refresh.status == "ok":
                self._events.append(TokenRefreshed(response.get("expires_in") if isinstance(response, dict) else None))
            else:
                self._events.append(TokenRefreshRefused(response))
            return
        if ref not in self._pending:
            return  # expired, or from before a reconnect
        topic = self._pending.pop(ref)
        reply = Reply.from_message(message)
        channel = self._channels.get(topic) if topic is not None else None
        if channel is not None and channel.join_ref == ref:
            self._joined(channel, reply)
        self._events.append(Replied(ref, reply))

    def _joined(self, channel: _Channel, reply: Reply) -> None:
        if reply.status == "ok":
            channel.state = ChannelState.JOINED
            channel.attempt = 0
            self._positioned(channel, reply.response)
            if channel.rejoined:
                self._events.append(Rejoined(channel.topic))
            waiting, channel.waiting = channel.waiting, []
            for message in waiting:  # now with the join_ref they were pushed under
                self._send(Message(channel.join_ref, message.ref, message.topic, message.event, message.payload), None)
        elif channel.rejoined:
            channel.state = ChannelState.ERRORED
            self._events.append(RejoinRefused(channel.topic, reply.response))
            self._schedule_rejoin(channel)
        else:  # the first join was refused: the user hears it from the reply, and nothing rejoins
            channel.wanted = False
            channel.state = ChannelState.CLOSED
            self._fail_waiting(channel, JoinRefused(channel.topic, reply.response))
            del self._channels[channel.topic]

    def _positioned(self, channel: _Channel, response: Any) -> None:
        """Learn the topic's position from a join reply, and say when missed broadcasts are lost."""
        if not isinstance(response, dict) or not isinstance(response.get("offset"), int):
            return
        current = {"offset": response["offset"], "epoch": response.get("epoch")}
        recovered = response.get("recovered")
        if recovered is False:
            self._events.append(RecoveryFailed(channel.topic, channel.since, current["offset"]))
        if recovered is not True:
            # When recovered, the replayed broadcasts that follow move the position themselves:
            # taking the reply's now would skip them if the socket dropped during the replay.
            channel.position = current

    # -- helpers ------------------------------------------------------------------------------

    def _make_ref(self) -> str:
        return str(next(self._refs))

    def _send_join(self, channel: _Channel, rejoin: bool) -> str:
        ref = self._make_ref()
        channel.join_ref = ref
        channel.rejoined = rejoin
        channel.state = ChannelState.JOINING
        channel.presence.reset()
        params = channel.params
        if channel.position is not None and isinstance(params, dict):
            params = {**params, "since": channel.position}
        channel.since = params.get("since") if isinstance(params, dict) else None
        if self.open:
            self._send(Message(ref, ref, channel.topic, PHX_JOIN, params), channel.topic)
        else:  # joined while the socket is down: this join fails, the reconnect rejoins
            channel.state = ChannelState.ERRORED
            if not rejoin:
                self._events.append(Failed(ref, ConnectionLost()))
        return ref

    def _send(self, message: Message, join_of: str | None) -> None:
        try:
            frame = self.serializer.encode_for_server(message)
        except ProtocolViolation as exc:  # a binary payload on V1, a field over 255 bytes
            self._events.append(Failed(str(message.ref), ClientError(str(exc))))
            return
        if message.ref is not None and message.event != HEARTBEAT:
            self._pending[message.ref] = join_of
        self._out.append(frame)

    def _schedule_rejoin(self, channel: _Channel) -> None:
        if channel.wanted:
            self._events.append(RejoinDue(channel.topic, _backoff(REJOIN_AFTER, channel.attempt)))
            channel.attempt += 1

    def _fail_waiting(self, channel: _Channel, error: ClientError) -> None:
        waiting, channel.waiting = channel.waiting, []
        for message in waiting:
            self._events.append(Failed(str(message.ref), error))
