"""An asyncio Phoenix Channels client on ``websockets``, speaking V2 JSON like phoenix.js.

``send``, ``listen``, ``watch``, ``bench`` and the tests use it, so the product eats its own food:

    async with Client(url, token=token) as client:
        room = client.channel("room:42")
        await room.join()
        reply = await room.push("new_msg", {"body": "hi"})   # push() returns a future
        async for event in room.events():
            ...

It follows phoenix.js where a server can tell the difference (PROTOCOL.md §8): the token goes in the
``token`` query parameter (or, with ``auth_token``, in the ``base64url.bearer.phx.`` subprotocol),
heartbeats every 30 s and a missed one closes the socket, a lost socket reconnects with phoenix.js's
backoff and rejoins every channel with a new join_ref, ``phx_error`` rejoins after 1, 2, 5, 10 s,
and pushes made before a join completes are sent once it does.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from chanctl.client.presence import Presence, PresenceChange
from chanctl.errors import (
    ClientError,
    ConnectionLost,
    ConnectRefused,
    JoinRefused,
    ProtocolViolation,
    ReplyTimeout,
    Unreachable,
)
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
from chanctl.protocol.serializers import V2Json

__all__ = ["Client", "ClientChannel", "Event", "endpoint_url"]

RECONNECT_AFTER = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0)
"""phoenix.js ``reconnectAfterMs``: the last value repeats."""
REJOIN_AFTER = (1.0, 2.0, 5.0, 10.0)
"""phoenix.js ``rejoinAfterMs``: the last value repeats."""

Event = Message | PresenceChange
"""What a channel's event stream yields: server pushes and broadcasts, and presence changes."""

_SERIALIZER = V2Json()
TOKEN_EXPIRING = "token_expiring"
"""The server's push on topic ``phoenix`` ahead of the socket token's expiry."""


def endpoint_url(url: str) -> str:
    """The WebSocket URL for a socket mount: ``ws://h:4000/socket`` gains ``/websocket``, as in phoenix.js.

    ``http(s)`` becomes ``ws(s)``; a URL already ending in ``/websocket`` is kept.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") or "/socket"
    if not path.endswith("/websocket"):
        path += "/websocket"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _backoff(schedule: tuple[float, ...], attempt: int) -> float:
    return schedule[min(attempt, len(schedule) - 1)]


class ClientChannel:
    """One topic on a :class:`Client`. Create it with :meth:`Client.channel`."""

    def __init__(self, client: Client, topic: str, params: Any, inbox: asyncio.Queue[Event]):
        self.client = client
        self.topic = topic
        self.params = params if params is not None else {}
        self.join_ref: str | None = None
        self.state = "closed"
        """``closed``, ``joining``, ``joined`` or ``errored`` (waiting to rejoin)."""
        self.presence = Presence(topic)
        self.position: dict[str, Any] | None = None
        """``{"offset": N, "epoch": E}`` of the last broadcast seen on a topic with history; a
        rejoin asks the server for everything after it (``since``)."""
        self._inbox = inbox
        self._wanted = False
        self._waiting: list[tuple[Message, asyncio.Future[Reply], float | None]] = []
        self._rejoin: asyncio.Task[None] | None = None

    async def join(self, timeout: float | None = None) -> Any:
        """Join; returns the join reply's response.

        Raises:
            JoinRefused: the server answered with an error; the channel stays closed.
            ReplyTimeout, ConnectionLost
        """
        self._wanted = True
        reply = await self._send_join(timeout)
        if reply.status != "ok":
            self._wanted = False
            self.state = "closed"
            raise JoinRefused(self.topic, reply.response)
        return reply.response

    def push(self, event: str, payload: Any = None, timeout: float | None = None) -> asyncio.Future[Reply]:
        """Send ``event``; the future resolves to the server's :class:`Reply`.

        Before the join completes the push waits, as in phoenix.js; ``timeout`` runs from now and
        fails the future with :class:`ReplyTimeout`.

        Raises:
            ClientError: the channel was never joined (or was left): nothing would send the push.
        """
        if not self._wanted and self.state != "joined":
            raise ClientError(f"push {event!r} on {self.topic}: join the channel first")
        message = Message(None, None, self.topic, event, {} if payload is None else payload)
        if self.state == "joined":
            return self.client._request(message, self.join_ref, timeout)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        self._waiting.append((message, future, deadline))
        if timeout is not None:
            asyncio.get_running_loop().call_later(timeout, self.client._expire, future, message, timeout)
        return future

    async def leave(self, timeout: float | None = None) -> None:
        """Leave the topic; the channel is closed whether the server answers or not."""
        self._wanted = False
        if self._rejoin is not None:
            self._rejoin.cancel()
        if self.state in ("joined", "joining") and self.client.connected:
            message = Message(None, None, self.topic, PHX_LEAVE, {})
            try:
                await self.client._request(message, self.join_ref, timeout)
            except (ReplyTimeout, ConnectionLost):
                pass
        self.state = "closed"
        self.client._channels.pop(self.topic, None)

    async def events(self) -> AsyncIterator[Event]:
        """Every push, broadcast and presence change of this channel, in arrival order."""
        while True:
            yield await self._inbox.get()

    # -- driven by the client ----------------------------------------------------------------

    async def _send_join(self, timeout: float | None) -> Reply:
        self.state = "joining"
        self.join_ref = self.client._make_ref()
        self.presence.reset()
        params = self.params
        if self.position is not None and isinstance(params, dict):
            params = {**params, "since": self.position}
        message = Message(self.join_ref, self.join_ref, self.topic, PHX_JOIN, params)
        reply = await self.client._request(message, self.join_ref, timeout, ref=self.join_ref)
        if reply.status == "ok":
            self.state = "joined"
            self._positioned(reply.response, params)
            self._flush_waiting()
        return reply

    def _positioned(self, response: Any, params: Any) -> None:
        """Learn the topic's position from a join reply, and say when missed broadcasts are lost."""
        if not isinstance(response, dict) or not isinstance(response.get("offset"), int):
            return
        current = {"offset": response["offset"], "epoch": response.get("epoch")}
        recovered = response.get("recovered")
        if recovered is False:
            since = params.get("since") if isinstance(params, dict) else None
            self.client._status(f"{self.topic}: could not recover the broadcasts missed since {since} "
                                f"(no longer in the server's history); continuing from offset {current['offset']}")
        if recovered is not True:
            # When recovered, the replayed broadcasts that follow move the position themselves:
            # taking the reply's now would skip them if the socket dropped during the replay.
            self.position = current

    def _flush_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        now = asyncio.get_running_loop().time()
        for message, future, deadline in waiting:
            if future.done():
                continue
            remaining = None if deadline is None else max(deadline - now, 0.0)
            inner = self.client._request(message, self.join_ref, remaining)
            inner.add_done_callback(lambda f, outer=future: _chain(f, outer))

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for _, future, _ in waiting:
            if not future.done():
                future.set_exception(ConnectionLost())
                future.exception()  # retrieved: its owner may have stopped waiting

    def _receive(self, message: Message) -> None:
        event = message.event
        if event in ("presence_state", "presence_diff"):
            for change in self.presence.receive(event, message.payload):
                self._inbox.put_nowait(change)
            return
        if event == PHX_ERROR:
            self._errored(message)
            return
        payload = message.payload
        if isinstance(payload, dict) and isinstance(payload.get("offset"), int) and isinstance(payload.get("epoch"), str):
            self.position = {"offset": payload["offset"], "epoch": payload["epoch"]}
        if event == PHX_CLOSE:
            self.state = "closed"
            self._wanted = False
            self.client._channels.pop(self.topic, None)
        self._inbox.put_nowait(message)

    def _errored(self, message: Message) -> None:
        self.state = "errored"
        self._inbox.put_nowait(message)
        self.client._status(f"{self.topic}: channel error {message.payload}; rejoining")
        self._schedule_rejoin()

    def _schedule_rejoin(self, immediate: bool = False) -> None:
        """Rejoin after a channel error (1 s first) or at once after a reconnect, as phoenix.js does."""
        if not self._wanted:
            return
        if self._rejoin is not None and not self._rejoin.done():
            self._rejoin.cancel()
        self._rejoin = asyncio.get_running_loop().create_task(self._rejoin_loop(immediate))

    async def _rejoin_loop(self, immediate: bool) -> None:
        """Rejoin with phoenix.js's rejoin backoff until joined, left, or the socket drops."""
        for attempt in itertools.count(-1 if immediate else 0):
            if attempt >= 0:
                await asyncio.sleep(_backoff(REJOIN_AFTER, attempt))  # a retry schedule, not a wait for an event
            if not self._wanted or not self.client.connected:
                return
            try:
                reply = await self._send_join(self.client.timeout)
            except ReplyTimeout:
                continue
            except ConnectionLost:
                return
            if reply.status == "ok":
                self.client._status(f"{self.topic}: rejoined")
                return
            self.state = "errored"
            self.client._status(f"{self.topic}: rejoin refused: {reply.response}")


def _chain(inner: asyncio.Future[Reply], outer: asyncio.Future[Reply]) -> None:
    if outer.done():
        return
    if inner.cancelled():
        outer.cancel()
    elif inner.exception() is not None:
        outer.set_exception(inner.exception())  # type: ignore[arg-type]
    else:
        outer.set_result(inner.result())


class Client:
    """A Phoenix socket: one WebSocket, its channels, heartbeats and reconnection.

    Args:
        url: the socket mount (``ws://127.0.0.1:4000/socket``) or its ``/websocket`` URL.
        token: sent as the ``token`` query parameter (what phoenix.js sends from ``params``); a
            function is called for each (re)connect, as phoenix.js re-reads a ``params`` function,
            and when the server warns ``token_expiring``, to refresh the socket in band.
        auth_token: sent in the ``base64url.bearer.phx.`` subprotocol instead (phoenix.js ``authToken``).
        params: more query parameters.
        heartbeat: seconds between heartbeats; a heartbeat unanswered by the next one closes the socket.
        reconnect: reconnect with backoff and rejoin after the socket drops.
        timeout: seconds for the handshake, and the default for joins made on reconnect.
        on_status: called with a line of text on disconnects, reconnects and rejoins.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | Callable[[], str] | None = None,
        auth_token: str | None = None,
        params: dict[str, str] | None = None,
        heartbeat: float = 30.0,
        reconnect: bool = True,
        timeout: float = 10.0,
        on_status: Callable[[str], None] | None = None,
    ):
        self.url = endpoint_url(url)
        self.token = token
        self.auth_token = auth_token
        self.params = dict(params or {})
        self.heartbeat = heartbeat
        self.reconnect = reconnect
        self.timeout = timeout
        self.on_status = on_status
        self._refs = itertools.count(1)
        self._channels: dict[str, ClientChannel] = {}
        self._pending: dict[str, tuple[asyncio.Future[Reply], asyncio.TimerHandle | None]] = {}
        self._ws: ClientConnection | None = None
        self._closing = False
        self._stopped = asyncio.Event()
        self._outbox: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the socket.

        Raises:
            ConnectRefused: the server refused the handshake (a bad token gets 403).
            Unreachable: nothing answered, or not within ``timeout``.
        """
        ws = await self._open()
        self._ws = ws  # usable at once: the runner task has not started yet
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))

    async def close(self) -> None:
        """Close the socket for good: no reconnect; pending replies fail with ConnectionLost."""
        self._closing = True
        self._stopped.set()
        for channel in self._channels.values():
            if channel._rejoin is not None:
                channel._rejoin.cancel()
            channel._fail_waiting()
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        self._fail_pending()

    def channel(self, topic: str, params: Any = None, inbox: asyncio.Queue[Event] | None = None) -> ClientChannel:
        """The channel for ``topic``; ``inbox`` lets several channels share one event stream."""
        channel = ClientChannel(self, topic, params, inbox if inbox is not None else asyncio.Queue())
        self._channels[topic] = channel
        return channel

    # -- the socket --------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        query = dict(self.params)
        if self.token is not None:
            query["token"] = self.token() if callable(self.token) else self.token
        query["vsn"] = _SERIALIZER.vsn
        parts = urlsplit(self.url)
        extra = (parts.query + "&" if parts.query else "") + urlencode(query)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, extra, ""))
        subprotocols = None
        if self.auth_token is not None:
            encoded = base64.b64encode(self.auth_token.encode()).decode().rstrip("=")
            subprotocols = ["phoenix", "base64url.bearer.phx." + encoded]
        try:
            return await websockets.connect(
                url, subprotocols=subprotocols, open_timeout=self.timeout, ping_interval=None,  # type: ignore[arg-type]
                max_size=None, compression=None,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
            raise ConnectRefused(exc.response.status_code, body) from None
        except InvalidURI as exc:
            raise Unreachable(self.url, str(exc)) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None

    async def _run(self, ws: ClientConnection) -> None:
        """Read until the socket drops; then reconnect and rejoin, until closed for good."""
        while True:
            self._ws = ws
            loop = asyncio.get_running_loop()
            helpers = [loop.create_task(self._writer(ws)), loop.create_task(self._heartbeat(ws))]
            try:
                async for data in ws:
                    self._receive(data)
            except ConnectionClosed:
                pass
            finally:
                for task in helpers:
                    task.cancel()
                self._ws = None
                self._outbox.clear()
                self._fail_pending()
            if self._closing or not self.reconnect:
                return
            code = ws.close_code
            self._status(f"disconnected (close code {code}); reconnecting")
            for channel in self._channels.values():
                if channel.state != "closed":
                    channel.state = "errored"
            next_ws = await self._reconnect()
            if next_ws is None:
                return
            if self._closing:  # close() ran while the handshake was in flight
                await next_ws.close()
                return
            ws = next_ws
            self._ws = ws
            self._status("reconnected")
            for channel in list(self._channels.values()):
                if channel._wanted:
                    channel._schedule_rejoin(immediate=True)

    async def _reconnect(self) -> ClientConnection | None:
        for attempt in itertools.count():
            try:
                await asyncio.wait_for(self._stopped.wait(), _backoff(RECONNECT_AFTER, attempt))
                return None  # closed for good while waiting
            except TimeoutError:
                pass
            try:
                return await self._open()
            except (ConnectRefused, Unreachable) as exc:
                if attempt % 10 == 9:
                    self._status(f"still reconnecting: {exc}")
        return None  # pragma: no cover - itertools.count never ends

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)  # the heartbeat period itself
            message = Message(None, None, PHOENIX_TOPIC, HEARTBEAT, {})
            try:
                await self._request(message, None, self.heartbeat)
            except ReplyTimeout:
                self._status("heartbeat timeout; closing the socket")
                await ws.close(1000, "heartbeat timeout")
                return
            except ConnectionLost:
                return

    def _receive(self, data: str | bytes) -> None:
        try:
            message = _SERIALIZER.decode(data)
        except ProtocolViolation as exc:
            self._status(f"ignored a frame: {exc}")
            return
        if message.event == PHX_REPLY:
            entry = self._pending.pop(message.ref, None) if message.ref is not None else None
            if entry is not None:
                future, timer = entry
                if timer is not None:
                    timer.cancel()
                payload = message.payload if isinstance(message.payload, dict) else {}
                if not future.done():
                    future.set_result(Reply(message.join_ref, message.ref, message.topic,
                                            str(payload.get("status")), payload.get("response")))
            return
        if message.topic == PHOENIX_TOPIC and message.event == TOKEN_EXPIRING:
            self._token_expiring(message.payload)
            return
        channel = self._channels.get(message.topic)
        if channel is not None and (message.join_ref is None or message.join_ref == channel.join_ref):
            channel._receive(message)

    def _token_expiring(self, payload: Any) -> None:
        """The server's warning: send a fresh token in band when we can mint one, else say so."""
        left = payload.get("expires_in") if isinstance(payload, dict) else None
        if not callable(self.token):
            self._status(f"the token expires in {left}s and cannot be refreshed; the server will close the socket")
            return
        refresh = Message(None, None, PHOENIX_TOPIC, ACCESS_TOKEN, {"access_token": self.token()})
        self._request(refresh, None, self.timeout).add_done_callback(self._refreshed)

    def _refreshed(self, future: asyncio.Future[Reply]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the socket dropped; reconnecting mints a fresh token anyway
        reply = future.result()
        if reply.status != "ok":
            self._status(f"token refresh refused: {reply.response}")
        else:
            self._status(f"token refreshed; it expires in {reply.response.get('expires_in')}s")

    # -- requests ----------------------------------------------------------------------------

    def _make_ref(self) -> str:
        return str(next(self._refs))

    def _request(self, message: Message, join_ref: str | None, timeout: float | None,
                 ref: str | None = None) -> asyncio.Future[Reply]:
        """Send ``message`` with a fresh ref; the future resolves with its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if self._ws is None:
            future.set_exception(ConnectionLost())
            return future
        ref = ref if ref is not None else self._make_ref()
        timer = None if timeout is None else loop.call_later(timeout, self._expire_ref, ref, message, timeout)
        self._pending[ref] = (future, timer)
        self._outbox.append(_SERIALIZER.encode(Message(join_ref, ref, message.topic, message.event, message.payload)))
        self._wake.set()
        return future

    async def _writer(self, ws: ClientConnection) -> None:
        """Send queued frames in order; one task per socket, so a push costs no task of its own."""
        outbox = self._outbox
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while outbox:
                    await ws.send(outbox.popleft(), text=True)
        except ConnectionClosed:
            pass  # the reader notices the close and fails the pending replies

    def _expire_ref(self, ref: str, message: Message, timeout: float) -> None:
        entry = self._pending.pop(ref, None)
        if entry is not None:
            self._expire(entry[0], message, timeout)

    @staticmethod
    def _expire(future: asyncio.Future[Reply], message: Message, timeout: float) -> None:
        if not future.done():
            future.set_exception(ReplyTimeout(message.topic, message.event, timeout))

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for future, timer in pending.values():
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_exception(ConnectionLost())
                future.exception()  # retrieved: nobody may be awaiting it any more

    def _status(self, text: str) -> None:
        if self.on_status is not None:
            self.on_status(text)
