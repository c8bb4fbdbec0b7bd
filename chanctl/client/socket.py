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
heartbeats every 30 s and a missed one closes the socket. Every decision (refs, replies, channel
states, rejoins, reconnects, the serializers) is :class:`~chanctl.client.protocol.ClientProtocol`'s,
which has no I/O; this module owns the socket, the timers and the futures, and reports the
protocol's typed :class:`~chanctl.client.protocol.Status` events to ``on_status``.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from chanctl.client.presence import Presence, PresenceChange
from chanctl.client.protocol import (
    ChannelState,
    ClientProtocol,
    Failed,
    Received,
    RefreshDue,
    RejoinDue,
    Replied,
    Status,
    stop_error,
)
from chanctl.errors import ClientError, ConnectionLost, ConnectRefused, JoinRefused, ReplyTimeout, Unreachable
from chanctl.protocol.messages import PHX_CLOSE, Message, Reply
from chanctl.protocol.serializers import BinaryFrame, negotiate

__all__ = ["Client", "ClientChannel", "Event", "endpoint_url"]

Event = Message | PresenceChange
"""What a channel's event stream yields: server pushes and broadcasts, and presence changes."""


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


class ClientChannel:
    """One topic on a :class:`Client`. Create it with :meth:`Client.channel`."""

    def __init__(self, client: Client, topic: str, params: Any, inbox: asyncio.Queue[Event]):
        self.client = client
        self.topic = topic
        self.params = params if params is not None else {}
        self._inbox = inbox
        self._presence = Presence(topic)

    @property
    def state(self) -> ChannelState:
        """``closed``, ``joining``, ``joined`` or ``errored`` (waiting to rejoin)."""
        return self.client._protocol.state(self.topic)

    @property
    def join_ref(self) -> str | None:
        return self.client._protocol.join_ref(self.topic)

    @property
    def position(self) -> dict[str, Any] | None:
        """``{"offset": N, "epoch": E}`` of the last broadcast seen on a topic with history; a
        rejoin asks the server for everything after it (``since``)."""
        return self.client._protocol.position(self.topic)

    @property
    def presence(self) -> Presence:
        """The channel's presence list, kept in sync from the server's events."""
        return self.client._protocol.presence(self.topic) or self._presence

    async def join(self, timeout: float | None = None) -> Any:
        """Join; returns the join reply's response.

        Raises:
            JoinRefused: the server answered with an error; the channel stays closed.
            ReplyTimeout, ConnectionLost
        """
        client = self.client
        ref = client._protocol.join(self.topic, self.params)
        reply = await client._request(ref, timeout, self.topic, "phx_join")
        if reply.status != "ok":
            raise JoinRefused(self.topic, reply.response)
        return reply.response

    def push(self, event: str, payload: Any = None, timeout: float | None = None) -> asyncio.Future[Reply]:
        """Send ``event``; the future resolves to the server's :class:`Reply`.

        Before the join completes the push waits, as in phoenix.js; ``timeout`` runs from now and
        fails the future with :class:`ReplyTimeout`.

        Raises:
            ClientError: the channel was never joined (or was left): nothing would send the push.
        """
        ref = self.client._protocol.push(self.topic, event, payload)
        return self.client._request(ref, timeout, self.topic, event)

    async def leave(self, timeout: float | None = None) -> None:
        """Leave the topic; the channel is closed whether the server answers or not."""
        client = self.client
        client._cancel_rejoin(self.topic)
        ref = client._protocol.leave(self.topic)
        if ref is not None:
            try:
                await client._request(ref, timeout, self.topic, "phx_leave")
            except (ReplyTimeout, ConnectionLost):
                pass
        else:
            client._pump()
        client._channels.pop(self.topic, None)

    async def events(self) -> AsyncIterator[Event]:
        """Every push, broadcast and presence change of this channel, in arrival order.

        Raises:
            ConnectRefused, ConnectionLost: the socket stopped for good (a refused reconnect, or a
                close without reconnecting) and nothing more will arrive.
        """
        inbox, stopped = self._inbox, self.client._stopped
        waiting: asyncio.Future[Any] | None = None  # one wait for the stop per stream, not one per event
        try:
            while True:
                if not inbox.empty():
                    yield inbox.get_nowait()
                    continue
                if stopped.is_set():
                    raise stop_error(self.client.stopped)
                if waiting is None:
                    waiting = asyncio.ensure_future(stopped.wait())
                getting = asyncio.ensure_future(inbox.get())
                try:
                    await asyncio.wait({getting, waiting}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getting.done():
                        getting.cancel()
                if getting.done() and not getting.cancelled():
                    yield getting.result()
        finally:
            if waiting is not None:
                waiting.cancel()


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
        on_status: called with each :class:`~chanctl.client.protocol.Status` (connecting, open,
            closed, refused, reconnecting, channel errors and rejoins); ``str()`` of one is a line of text.
        vsn: the serializer to speak, ``2.0.0`` (JSON arrays and binary frames) or ``1.0.0`` (objects).
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
        on_status: Callable[[Status], None] | None = None,
        vsn: str = "2.0.0",
    ):
        serializer = negotiate(vsn)
        if serializer is None:
            raise ClientError(f"vsn {vsn!r}: chanctl speaks 1.0.0 and 2.0.0")
        self.url = endpoint_url(url)
        self.token = token
        self.auth_token = auth_token
        self.params = dict(params or {})
        self.heartbeat = heartbeat
        self.reconnect = reconnect
        self.timeout = timeout
        self.on_status = on_status
        self.vsn = serializer.vsn
        self._protocol = ClientProtocol(serializer, reconnect=reconnect, url=self.url)  # type: ignore[arg-type]
        self._protocol.refreshable = callable(token)
        self._channels: dict[str, ClientChannel] = {}
        self._futures: dict[str, tuple[asyncio.Future[Reply], asyncio.TimerHandle | None]] = {}
        self._rejoins: dict[str, asyncio.TimerHandle] = {}
        self._ws: ClientConnection | None = None
        self._closing = False
        self._stopped = asyncio.Event()
        self._outbox: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._protocol.open

    @property
    def stopped(self) -> Status | None:
        """Why the socket stopped for good (a :class:`~chanctl.client.protocol.Refused` with
        ``final`` set for a 403 on reconnect, or a :class:`~chanctl.client.protocol.Closed`), or None."""
        return self._protocol.stopped

    async def wait_stopped(self) -> Status:
        """Wait until the socket stops for good (see :attr:`stopped`) and return why."""
        await self._stopped.wait()
        assert self._protocol.stopped is not None
        return self._protocol.stopped

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
        self._protocol.connecting()
        self._pump()
        ws = await self._open()
        self._opened(ws)
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))

    async def close(self) -> None:
        """Close the socket for good: no reconnect; pending replies fail with ConnectionLost."""
        self._closing = True
        for topic in list(self._rejoins):
            self._cancel_rejoin(topic)
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        else:
            self._protocol.connection_closed(closing=True)
            self._pump()
        self._stopped.set()
        self._fail_futures(ConnectionLost())

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
        query["vsn"] = self.vsn
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

    def _opened(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._protocol.connection_opened()
        self._pump()

    async def _run(self, ws: ClientConnection) -> None:
        """Read until the socket drops; then reconnect as the protocol decides, until it stops."""
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        while True:
            helpers = [loop.create_task(self._writer(ws)), loop.create_task(self._heartbeat(ws))]
            try:
                async for data in ws:
                    protocol.receive_data(data)
                    self._pump()
            except ConnectionClosed:
                pass
            finally:
                for task in helpers:
                    task.cancel()
                self._ws = None
                self._outbox.clear()
            wait = protocol.connection_closed(ws.close_code, ws.close_reason or "", closing=self._closing)
            self._pump()
            next_ws = await self._reconnect(wait)
            if next_ws is None:
                self._stopped.set()
                self._fail_futures(ConnectionLost())
                return
            ws = next_ws
            self._opened(ws)

    async def _reconnect(self, wait: float | None) -> ClientConnection | None:
        """Try again after each wait the protocol asks for; None once it says stop (or close() ran)."""
        while wait is not None and not self._closing:
            try:
                await asyncio.wait_for(self._stopped.wait(), wait)  # close() ends the wait early
                return None
            except TimeoutError:
                pass
            self._protocol.connecting()
            self._pump()
            try:
                ws = await self._open()
            except ConnectRefused as exc:
                wait = self._protocol.connection_failed(str(exc), exc.status, exc.body)
            except Unreachable as exc:
                wait = self._protocol.connection_failed(str(exc))
            else:
                if self._closing:  # close() ran while the handshake was in flight
                    await ws.close()
                    return None
                return ws
            self._pump()
        return None

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)  # the heartbeat period itself
            alive = self._protocol.heartbeat()
            self._pump()
            if not alive:
                await ws.close(1000, "heartbeat timeout")
                return

    async def _writer(self, ws: ClientConnection) -> None:
        """Send queued frames in order; one task per socket, so a push costs no task of its own."""
        outbox = self._outbox
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while outbox:
                    frame = outbox.popleft()
                    await ws.send(frame, text=not isinstance(frame, BinaryFrame))
        except ConnectionClosed:
            pass  # the reader notices the close

    # -- the protocol's output ---------------------------------------------------------------

    def _pump(self) -> None:
        """Queue the protocol's frames for the writer and act on its events."""
        protocol = self._protocol
        frames = protocol.data_to_send()
        if frames:
            if self._ws is not None:
                self._outbox.extend(frames)
                self._wake.set()
        for event in protocol.events_received():
            kind = type(event)
            if kind is Replied:
                self._settle(event.ref, event.reply)  # type: ignore[union-attr]
            elif kind is Received:
                self._deliver(event)  # type: ignore[arg-type]
            elif kind is Failed:
                self._settle(event.ref, event.error)  # type: ignore[union-attr]
            elif kind is RejoinDue:
                self._schedule_rejoin(event)  # type: ignore[arg-type]
            elif kind is RefreshDue:
                if callable(self.token):
                    protocol.refresh_token(self.token())
                    self._pump()
            elif self.on_status is not None:
                self.on_status(event)  # type: ignore[arg-type]

    def _deliver(self, event: Received) -> None:
        channel = self._channels.get(event.topic)
        if channel is None:
            return
        channel._inbox.put_nowait(event.event)
        if isinstance(event.event, Message) and event.event.event == PHX_CLOSE:
            self._channels.pop(event.topic, None)

    def _request(self, ref: str, timeout: float | None, topic: str, event: str) -> asyncio.Future[Reply]:
        """The future of ``ref``'s reply, failed with ReplyTimeout after ``timeout``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, self._expire, ref, topic, event, timeout)
        self._futures[ref] = (future, timer)
        self._pump()
        return future

    def _settle(self, ref: str, outcome: Reply | ClientError) -> None:
        entry = self._futures.pop(ref, None)
        if entry is None:
            return
        future, timer = entry
        if timer is not None:
            timer.cancel()
        if future.done():
            return
        if isinstance(outcome, Reply):
            future.set_result(outcome)
        else:
            future.set_exception(outcome)
            future.exception()  # retrieved: its owner may have stopped waiting

    def _expire(self, ref: str, topic: str, event: str, timeout: float) -> None:
        entry = self._futures.pop(ref, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(ReplyTimeout(topic, event, timeout))
        self._protocol.expire(ref)
        self._pump()

    def _fail_futures(self, error: ClientError) -> None:
        futures, self._futures = self._futures, {}
        for future, timer in futures.values():
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_exception(error)
                future.exception()

    def _schedule_rejoin(self, due: RejoinDue) -> None:
        self._cancel_rejoin(due.topic)
        self._rejoins[due.topic] = asyncio.get_running_loop().call_later(due.wait, self._rejoin, due.topic)

    def _rejoin(self, topic: str) -> None:
        self._rejoins.pop(topic, None)
        self._protocol.rejoin(topic)
        self._pump()

    def _cancel_rejoin(self, topic: str) -> None:
        timer = self._rejoins.pop(topic, None)
        if timer is not None:
            timer.cancel()
