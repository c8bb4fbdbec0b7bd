"""Phoenix's LongPoll transport: ``<path>/longpoll`` for clients that cannot hold a WebSocket.

phoenix.js falls back to it (``longPollFallbackMs``) where a proxy blocks WebSockets. The wire is
Phoenix's (``Phoenix.Transports.LongPoll``), so phoenix.js needs no change:

- ``GET`` without a session token authenticates exactly as the WebSocket handshake does (origin,
  ``vsn``, the user token as ``?token=`` or ``X-Phoenix-AuthToken``) and opens a session; the body
  says ``{"status": 410, "token": SESSION, "messages": []}``, which phoenix.js takes as "open".
- ``GET`` with the session token (``X-Phoenix-Longpoll-Token``, else the last ``token`` query
  value) answers at once with what is queued (``status`` 200), or waits up to ``window`` for
  something, then answers ``204``. A session that is gone answers ``410``: phoenix.js reconnects
  and rejoins its channels.
- ``POST`` carries up to 100 client messages as newline-separated lines (JSON text, or base64 for
  a binary frame) and is answered once the socket has handled them.
- Every answer is HTTP 200 with a JSON body whose ``status`` says what happened, as Phoenix does
  (phoenix.js reads only the body).

A :class:`LongPollSession` is a :class:`~chanctl.server.transport.Transport`, so the socket behind
it is the same :class:`~chanctl.server.connection.Connection` as a WebSocket's: rules, presence,
rate limits, metrics and the admin plane behave alike. Its encoder turns a broadcast into a JSON
string once per serializer, shared by every LongPoll subscriber, so a poll's answer is a join of
ready bytes. A session whose client stops polling ends after 1.5 windows, as in Phoenix.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import h11
import orjson

from chanctl.errors import HandshakeRefused
from chanctl.protocol.messages import Encoded, Message
from chanctl.protocol.serializers import BinaryFrame, Serializer
from chanctl.server.wire import FrameEncoder

if TYPE_CHECKING:
    from chanctl.server.transport import AtOnceReader

__all__ = ["LongPollEndpoint", "LongPollSession", "MAX_BATCH", "SESSION_PREFIX"]

log = logging.getLogger("chanctl.longpoll")

MAX_BATCH = 100
"""Client messages one POST may carry (phoenix.js's MAX_LONGPOLL_BATCH_SIZE, Phoenix's cap)."""
SESSION_PREFIX = "lp."
"""Session tokens start so: told apart from a user token that phoenix.js also sends as ``token``."""
MAX_HEADERS = 16 * 1024
"""Bytes of request line and headers one HTTP request may have."""
INACTIVE_WINDOWS = 1.5
"""A session whose client has not polled for this many windows ends (Phoenix's factor)."""

Admit = Callable[[Any, str | None, str | None, str | None], tuple[dict[str, Any], Serializer, Any]]
"""``(remote, origin, vsn, token) -> (claims, serializer, grant)``; raises HandshakeRefused."""
Accept = Callable[["LongPollSession", dict[str, Any], Serializer, Any], Coroutine[Any, Any, None]]
"""Serves a session until it closes (the server's way in for every transport)."""


class LongPollEncoder(FrameEncoder):
    """A message as the JSON string a poll's ``messages`` list holds; one per serializer, sharing
    the serializer's bytes with the WebSocket encoder (one JSON encode per broadcast in all)."""

    _instances: dict[Serializer, FrameEncoder] = {}

    @staticmethod
    def frame(data: bytes) -> bytes:  # type: ignore[override]
        if isinstance(data, BinaryFrame):
            # phoenix.js reads poll messages as text; Phoenix's LongPoll cannot carry binary either.
            return b""
        return orjson.dumps(data.decode())

    def around(self, message: Message, payload: Encoded) -> list[bytes] | None:
        return None  # a poll's message is one JSON string: the payload is encoded into it as usual


class LongPollSession:
    """One LongPoll client: a queue of answers for its polls and of its messages for the socket."""

    needs_idle_timeout = False
    """phoenix.js sends no heartbeat over LongPoll; a client that stops polling ends the session."""

    def __init__(self, token: str, remote_address: Any, window: float):
        self.token = token
        self.remote_address = remote_address
        self.window = window
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._poller: asyncio.Future[bool] | None = None
        """A GET waiting for messages; its result says whether a newer GET displaced it."""
        self._posting = False
        self._close_code: int | None = None
        self.close_reason = ""
        """The reason of :attr:`close_code` (the connection's, or why the session ended)."""
        loop = asyncio.get_running_loop()
        self._last_poll = loop.time()
        self._inactive = loop.call_later(window * INACTIVE_WINDOWS, self._check_inactive)

    # -- the Transport the connection sees --------------------------------------------------

    def encoder(self, serializer: Serializer) -> FrameEncoder:
        return LongPollEncoder.of(serializer)

    def has_more(self) -> bool:
        return not self._incoming.empty()

    def read_at_once(self, reader: AtOnceReader | None) -> None:
        """Not offered: a POST's messages go through the iteration (the POST is answered once they are handled)."""

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while (data := await self._incoming.get()) is not None:
            yield data
            self._incoming.task_done()  # the socket asks for the next one: this one is handled
        self._incoming.task_done()

    def write(self, frames: list[bytes]) -> bool:
        if self._close_code is not None:
            return False
        for frame in frames:
            if frame:
                self._queued.append(frame)
                self._queued_bytes += len(frame)
            else:
                log.warning("a binary frame to LongPoll client %s was not sent: LongPoll carries text only", self.remote_address)
        self._wake()
        return True

    def unsent(self) -> int:
        return self._queued_bytes

    async def close(self, code: int, reason: str) -> None:
        self._end(code, reason)

    def abort(self) -> None:
        self._end(1006, "")

    def _end(self, code: int, reason: str) -> None:
        """The one way a session ends: the socket's iteration stops and a waiting poll answers."""
        if self._close_code is None:
            self._close_code, self.close_reason = code, reason
            log.debug("LongPoll session of %s ended: %d %s", self.remote_address, code, reason)
            self._inactive.cancel()
            self._incoming.put_nowait(None)
            self._wake()

    @property
    def close_code(self) -> int | None:
        return self._close_code

    closed_here = False
    """The link never closes on its own: the connection closes it, or the client stops polling
    (which is the client going away, 1001)."""

    @property
    def closed(self) -> bool:
        return self._close_code is not None

    # -- what the HTTP side asks -----------------------------------------------------------

    async def poll(self) -> tuple[int, list[bytes]]:
        """The answer to one GET: (200, messages), (204, []) after a quiet window, (410, []) once
        the session is gone. A newer poll answers an older one still waiting with 204."""
        loop = asyncio.get_running_loop()
        self._last_poll = loop.time()
        if self._poller is not None and not self._poller.done():
            self._poller.set_result(True)  # displaced by this poll
        if not self._queued and self._close_code is None:
            self._poller = waiter = loop.create_future()
            try:
                displaced = await asyncio.wait_for(waiter, self.window)
            except TimeoutError:
                displaced = False
            finally:
                self._last_poll = loop.time()
                if self._poller is waiter:
                    self._poller = None
            if displaced:
                return 204, []
        if self._queued:
            messages, self._queued, self._queued_bytes = self._queued, [], 0
            return 200, messages
        return (410, []) if self._close_code is not None else (204, [])

    async def post(self, messages: list[str | bytes]) -> int:
        """Hand a POST's messages to the socket; 200 once it has handled them all, 408 when it
        did not within a window, 409 while another POST of this session is in flight."""
        if self._close_code is not None:
            return 410
        if self._posting:
            return 409
        self._posting = True
        try:
            for data in messages:
                self._incoming.put_nowait(data)
            try:
                await asyncio.wait_for(self._incoming.join(), self.window)
            except TimeoutError:
                return 408
            return 200
        finally:
            self._posting = False

    def _wake(self) -> None:
        if self._poller is not None and not self._poller.done():
            self._poller.set_result(False)

    def _check_inactive(self) -> None:
        idle = asyncio.get_running_loop().time() - self._last_poll
        limit = self.window * INACTIVE_WINDOWS
        if self._poller is None and idle >= limit:
            # The client stopped polling: end as a WebSocket whose peer went away (1001).
            log.info("LongPoll session of %s ended: no poll for %gs", self.remote_address, limit)
            self._end(1001, f"no poll for {limit:g}s")
        else:
            self._inactive = asyncio.get_running_loop().call_later(limit - idle if self._poller is None else limit, self._check_inactive)


class LongPollEndpoint:
    """The sessions of one server and the HTTP conversations that reach them.

    Args:
        path: where LongPoll lives (``<server.path>/longpoll``).
        admit: the server's handshake check, shared with the WebSocket listener.
        accept: serves a session's socket until it closes.
        spawn: runs a coroutine in the server's background (kept until it ends).
        window: seconds a poll waits for messages.
        max_body: bytes one POST may carry.
        max_frame_size: bytes one client message may have (as for a WebSocket frame).
    """

    def __init__(self, path: str, admit: Admit, accept: Accept, spawn: Callable[[Coroutine[Any, Any, Any]], Any], *,
                 window: float, max_body: int, max_frame_size: int):
        self.path = path
        self._admit = admit
        self._accept = accept
        self.spawn = spawn
        """Runs a coroutine in the server's background, keeping it until it ends."""
        self.window = window
        self.max_body = max_body
        self.max_frame_size = max_frame_size
        self.sessions: dict[str, LongPollSession] = {}

    def protocol(self) -> LongPollHTTP:
        """A new HTTP/1.1 conversation (one TCP connection, keep-alive)."""
        return LongPollHTTP(self)

    async def answer(self, method: str, target: str, headers: dict[str, str], body: bytes, remote: Any) -> tuple[int, bytes]:
        """A GET's or POST's answer as (HTTP status, JSON body); the body's ``status`` is Phoenix's."""
        if method not in ("GET", "POST"):
            return 400, _status(400)
        query = parse_qs(urlsplit(target).query, keep_blank_values=True)
        token = self._session_token(headers, query)
        session = self.sessions.get(token) if token is not None else None
        if session is not None and session.closed:
            session = None
        if method == "POST":
            if session is None:
                return 200, _status(410)
            messages = self._batch(body, headers.get("content-type", ""))
            if isinstance(messages, int):
                if messages == 413:
                    await session.close(1009, "message too big")
                return 200, _status(messages)
            return 200, _status(await session.post(messages))
        if session is None:
            if token is not None:
                return 200, _poll_answer(410, None, [])  # gone: phoenix.js starts over
            return 200, self._open(headers, query, remote)
        status, messages = await session.poll()
        return 200, _poll_answer(status, session.token, messages)

    def _open(self, headers: dict[str, str], query: dict[str, list[str]], remote: Any) -> bytes:
        tokens = [t for t in query.get("token", []) if not t.startswith(SESSION_PREFIX)]
        token = headers.get("x-phoenix-authtoken") or (tokens[0] if tokens else None)
        try:
            claims, serializer, grant = self._admit(remote, headers.get("origin"), query.get("vsn", [None])[-1], token)
        except HandshakeRefused:
            return _status(403)
        session = LongPollSession(SESSION_PREFIX + secrets.token_urlsafe(24), remote, self.window)
        self.sessions[session.token] = session
        self.spawn(self._serve(session, claims, serializer, grant))
        return _poll_answer(410, session.token, [])

    async def _serve(self, session: LongPollSession, claims: dict[str, Any], serializer: Serializer, grant: Any) -> None:
        try:
            await self._accept(session, claims, serializer, grant)
        finally:
            self.sessions.pop(session.token, None)
            session.abort()

    @staticmethod
    def _session_token(headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        token = headers.get("x-phoenix-longpoll-token") or (query.get("token") or [None])[-1]
        return token if token is not None and token.startswith(SESSION_PREFIX) else None

    def _batch(self, body: bytes, content_type: str) -> list[str | bytes] | int:
        """A POST body as client messages, or the status that refuses it (400, 413)."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return 400
        lines = text.splitlines() if content_type.startswith("application/x-ndjson") else [text]
        if len(lines) > MAX_BATCH:
            return 400
        messages: list[str | bytes] = []
        for line in lines:
            if line.startswith("["):
                data: str | bytes = line
            else:
                try:
                    data = base64.b64decode(line, validate=True)
                except binascii.Error:
                    return 400
            if len(data) > self.max_frame_size:
                return 413
            messages.append(data)
        return messages

    def close(self) -> None:
        """End every session (the server is stopping; their sockets were closed already)."""
        for session in list(self.sessions.values()):
            session.abort()


def _status(status: int) -> bytes:
    return orjson.dumps({"status": status})


def _poll_answer(status: int, token: str | None, messages: list[bytes]) -> bytes:
    """``{"status", "token", "messages"}`` with the messages joined in as the encoder made them
    (already JSON strings: a broadcast is not encoded again per poll)."""
    return orjson.dumps({"status": status, "token": token})[:-1] + b',"messages":[' + b",".join(messages) + b"]}"


_HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"cache-control", b"no-store"),  # with the token in a header, every session polls the same URL
    (b"access-control-allow-origin", b"*"),
]


class LongPollHTTP(asyncio.Protocol):
    """One TCP connection's HTTP/1.1 conversation (h11 parses; keep-alive, one request at a time)."""

    def __init__(self, endpoint: LongPollEndpoint):
        self.endpoint = endpoint
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        self.transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._busy = False
        self._remote: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._remote = transport.get_extra_info("peername")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._next()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._next()
        return None

    def _next(self) -> None:
        while not self._busy and self.transport is not None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request, self._body = event, bytearray()
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > self.endpoint.max_body:
                    self._fail(413, "request body too large")
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.endpoint.max_body:
                    self._fail(413, "request body too large")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._busy = True
                self.endpoint.spawn(self._respond())
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    async def _respond(self) -> None:
        request = self._request
        assert request is not None
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
        method = request.method.decode("ascii", "replace")
        if method == "OPTIONS":  # a CORS preflight: what the browser may send next
            allow = headers.get("access-control-request-headers", "")
            self._send(200, [*_HEADERS, (b"access-control-allow-headers", allow.encode("latin-1")),
                             (b"access-control-allow-methods", b"get, post, options"),
                             (b"access-control-max-age", b"3600")], b"")
        else:
            try:
                status, payload = await self.endpoint.answer(method, request.target.decode("ascii", "replace"), headers,
                                                             bytes(self._body), self._remote)
            except Exception:
                log.exception("LongPoll request from %s failed", self._remote)
                status, payload = 200, _status(500)
            self._send(status, _HEADERS, payload)
        self._busy = False
        if self.transport is None:
            return
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            self._close()
            return
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:
            self._close()
            return
        self._next()

    def _send(self, status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
        if self.transport is None:
            return
        response = h11.Response(status_code=status, headers=[*headers, (b"content-length", str(len(payload)).encode())])
        self.transport.write(self.h11.send(response) + self.h11.send(h11.Data(data=payload)) + self.h11.send(h11.EndOfMessage()))

    def _fail(self, status: int, reason: str) -> None:
        log.info("LongPoll request from %s refused: %s", self._remote, reason)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                self._send(status, [(b"connection", b"close"), *_HEADERS], _status(status))
            except h11.LocalProtocolError:
                pass
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
