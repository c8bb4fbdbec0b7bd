"""The in-process harness: real server code, an in-memory WebSocket, the test as the client.

Nothing here re-implements the server. :class:`ChannelHarness` builds a real
:class:`~chanctl.server.runtime.ChannelServer` (router, YAML channels, Python handlers, pubsub,
presence) without listening, and each :meth:`ChannelHarness.connect` hands the server's own
server an :class:`_InMemoryTransport` through the one way in every transport uses,
:meth:`ChannelServer.accept <chanctl.server.runtime.ChannelServer.accept>`: the real
:class:`~chanctl.server.connection.Connection` reads the test's frames from a queue and writes whole
WebSocket frames to it, which it parses back into :class:`~chanctl.protocol.messages.Message` objects
for the test's inbox.
So join rules, schemas, handler callbacks, timers, crashes, presence and fastlane broadcasts run
exactly as they do behind a socket, and every payload makes a JSON round trip both ways (Phoenix's
ChannelTest only stringifies the keys of what the test sends; a JSON round trip also catches
payloads the wire cannot carry).

Assertions follow Phoenix.ChannelTest (PROTOCOL.md §9): they scan the whole inbox for the first
match, consume it, and leave the others in place; refutes wait their whole timeout. So does the
calling style: a call that only sends returns at once (``push`` a ref, ``broadcast`` the recipients),
a call that waits for the server is awaited (``join``, ``leave``, ``close``, ``assert_*``, ``refute_*``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from chanctl.config.load import LoadedConfig
from chanctl.server.compile import CompiledConfig
from chanctl.errors import JoinRefused
from chanctl.protocol.messages import (
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    Message,
)
from chanctl.protocol.serializers import V2Json, binary_push
from chanctl.server.runtime import ChannelServer, build_server
from chanctl.server.wire import FrameEncoder

__all__ = ["ChannelHarness", "TestChannel", "TestSocket", "TestSubscription"]

ASSERT_TIMEOUT = 1.0
"""Seconds an ``assert_*`` waits by default. Longer than Phoenix's 100 ms because a match returns at
once, so only failing tests pay it, and a loaded CI machine must not fail passing ones."""
REFUTE_TIMEOUT = 0.1
"""Seconds a ``refute_*`` waits by default (Phoenix's ``refute_receive_timeout``)."""

_SERIALIZER = V2Json()

Pattern = Mapping[str, Any] | Callable[[Any], bool] | bytes | None
"""What a payload must look like: None (anything), a dict matched partially and recursively, a
predicate, or the exact bytes of a binary payload."""


def matches(pattern: Pattern, payload: Any) -> bool:
    """Whether ``payload`` fits ``pattern``: every key of a dict pattern is present with a matching
    value (nested dicts partially too, other values by equality); a callable decides itself."""
    if pattern is None:
        return True
    if callable(pattern):
        return bool(pattern(payload))
    if isinstance(pattern, bytes):
        return payload == pattern
    if not isinstance(payload, dict):
        return False
    for key, expected in pattern.items():
        if key not in payload:
            return False
        actual = payload[key]
        if isinstance(expected, Mapping) or callable(expected):
            if not matches(expected, actual):
                return False
        elif actual != expected:
            return False
    return True


def describe(message: Message) -> str:
    """One inbox entry as a failure message shows it."""
    payload = repr(message.payload) if isinstance(message.payload, bytes) else orjson.dumps(message.payload, default=repr).decode()
    if message.event == PHX_REPLY:
        return f"reply ref={message.ref} on {message.topic}: {payload}"
    if message.event in (PHX_ERROR, PHX_CLOSE):
        how = "crashed" if message.event == PHX_ERROR else "closed"
        return f"{message.event} on {message.topic}: the channel {how} (expect it with assert_exit)"
    kind = "broadcast" if message.join_ref is None else "push"
    return f"{kind} {message.event!r} on {message.topic}: {payload}"


_BINARY_FIELDS = {0: ("join_ref", "topic", "event"), 1: ("join_ref", "ref", "topic", "status"), 2: ("topic", "event")}
"""The header fields of the server's binary frames by kind: push, reply, broadcast (PROTOCOL.md §2.3)."""


def _decode_binary(data: bytes) -> Message:
    """A server binary frame as the Message its JSON twin would decode to, with a ``bytes`` payload."""
    names = _BINARY_FIELDS[data[0]]
    pos, fields = 1 + len(names), {}
    for name, size in zip(names, data[1 : 1 + len(names)]):
        fields[name] = data[pos : pos + size].decode() or None
        pos += size
    payload = data[pos:]
    if data[0] == 1:
        return Message(fields["join_ref"], fields["ref"], fields["topic"], PHX_REPLY, {"status": fields["status"], "response": payload})
    return Message(fields.get("join_ref"), None, fields["topic"], fields["event"], payload)


class _FrameReader:
    """Parses the server's unmasked WebSocket frames back into Messages for an inbox."""

    def __init__(self, receive: Callable[[Message], None]):
        self._receive = receive
        self._reader = StreamReader()
        self._message: list[Frame] = []
        """The fragments of a message so far (the server sends a large message in fragments)."""

    def feed(self, data: bytes) -> None:
        self._reader.feed_data(data)
        while True:
            parser = Frame.parse(self._reader.read_exact, mask=False)
            try:
                next(parser)
            except StopIteration as done:
                frame: Frame = done.value
            else:  # an incomplete frame: the Connection only ever writes whole ones
                parser.close()
                return
            self._message.append(frame)
            if not frame.fin:
                continue
            first, data = self._message[0], b"".join(f.data for f in self._message)
            self._message = []
            if first.opcode is Opcode.TEXT:
                self._receive(_SERIALIZER.decode(data.decode()))
            else:
                self._receive(_decode_binary(data))



class _InMemoryTransport:
    """A :class:`~chanctl.server.transport.Transport` whose other end is the test: it reads what
    the test sends from a queue and parses what the server writes into the test's inbox."""

    remote_address = ("chanctl.testing", 0)
    needs_idle_timeout = True
    closed_here = False
    """Only the connection (or the test, as the client) closes this link, never the link itself."""

    def __init__(self, receive: Callable[[Message], None]):
        self._frames = _FrameReader(receive)
        self.close_code: int | None = None
        self.close_reason = ""
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    def encoder(self, serializer: Any) -> FrameEncoder:
        return FrameEncoder.of(serializer)  # whole WebSocket frames, as a real socket's

    def send(self, data: str | bytes) -> None:
        """A frame from the test, as the client."""
        self._incoming.put_nowait(data)

    def __aiter__(self) -> _InMemoryTransport:
        return self

    async def __anext__(self) -> str | bytes:
        data = await self._incoming.get()
        if data is None:
            raise StopAsyncIteration
        return data

    def has_more(self) -> bool:
        return not self._incoming.empty()

    def read_at_once(self, reader: Any) -> None:
        """Not offered: the test's frames go through the iteration, one loop turn each, as
        ``Phoenix.ChannelTest`` pushes go through the channel process."""

    def write(self, frames: list[bytes]) -> bool:
        if self.close_code is not None:
            return False
        for frame in frames:
            self._frames.feed(frame)
        return True

    def unsent(self) -> int:
        return 0  # the test reads everything at once: never a slow consumer

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._incoming.put_nowait(None)

    def abort(self) -> None:
        self._incoming.put_nowait(None)


class _Inbox:
    """Messages the server sent to one socket, in order; waiters wake on each arrival."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._arrived = asyncio.Event()

    def put(self, message: Message) -> None:
        self.messages.append(message)
        self._arrived.set()

    def take(self, accept: Callable[[Message], bool]) -> Message | None:
        for i, message in enumerate(self.messages):
            if accept(message):
                return self.messages.pop(i)
        return None

    async def wait(self, accept: Callable[[Message], bool], timeout: float) -> Message | None:
        """The first accepted message, waiting up to ``timeout`` seconds for one; None if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := self.take(accept)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return self.take(accept)
        return found

    def listing(self, topic: str | None = None) -> str:
        """What a failure message shows of this inbox (``topic``'s messages only, if given)."""
        waiting = [describe(m) for m in self.messages if topic is None or m.topic == topic]
        if not waiting:
            return "; the inbox is empty"
        return "; the inbox holds:\n  " + "\n  ".join(waiting)


class TestSocket:
    """One client connection, played by the test (Phoenix's ``socket`` after ``connect``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, harness: ChannelHarness, claims: dict[str, Any]):
        self.harness = harness
        self.claims = claims
        """The verified token claims the channels see as ``user``."""
        self.inbox = _Inbox()
        """Everything the server sent this socket and the test has not consumed."""
        self.transport = _InMemoryTransport(self.inbox.put)
        self._refs = itertools.count(1)
        self._task = harness.server.spawn(harness.server.accept(self.transport, claims, _SERIALIZER))

    def send(self, join_ref: str | None, topic: str, event: str, payload: Any, ref: str | None = None) -> str:
        """Send one frame as phoenix.js would; returns its ref. The payload goes through JSON, or
        as a binary frame when it is ``bytes``."""
        ref = ref or str(next(self._refs))
        if isinstance(payload, bytes):
            self.transport.send(bytes(binary_push(Message(join_ref, ref, topic, event, payload))))
            return ref
        # Non-string keys become strings, as JSON (and Phoenix.ChannelTest) make them.
        frame = [join_ref, ref, topic, event, {} if payload is None else payload]
        self.transport.send(orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS).decode())
        return ref

    async def join(self, topic: str, payload: Any = None, timeout: float = ASSERT_TIMEOUT) -> tuple[Any, TestChannel]:
        """Join ``topic``; returns ``(response, channel)``.

        Raises:
            JoinRefused: the join was refused (``response["reason"] == "join crashed"`` when the
                handler's join raised).
            AssertionError: no join reply within ``timeout``.
        """
        # A join's join_ref is its own ref (phoenix.js); the channel's later frames carry it.
        ref = str(next(self._refs))
        self.send(ref, topic, PHX_JOIN, payload, ref)
        reply = await self.inbox.wait(lambda m: m.event == PHX_REPLY and m.ref == ref and m.topic == topic, timeout)
        if reply is None:
            raise AssertionError(f"no reply to joining {topic} within {timeout:g}s{self.inbox.listing()}")
        status, response = reply.payload["status"], reply.payload["response"]
        if status != "ok":
            raise JoinRefused(topic, response)
        return response, TestChannel(self, topic, ref)

    async def close(self) -> None:
        """Close the connection as a client would: every channel's ``terminate`` runs (``closed``)."""
        await self.transport.close(1000, "test closed the socket")
        await self.wait_closed()

    async def wait_closed(self) -> int | None:
        """Wait for the connection to end (e.g. after ``server.disconnect(socket_id)``); returns the
        close code, once every channel's ``terminate`` has run."""
        await self._task
        return self.transport.close_code

    @property
    def closed(self) -> bool:
        """Whether the connection was closed, by the test or by the server."""
        return self.transport.close_code is not None

    def unconsumed(self, include_replies: bool = False) -> list[Message]:
        """The pushes and broadcasts (and replies, if asked) nobody asserted."""
        return [m for m in self.inbox.messages if include_replies or m.event != PHX_REPLY]


class _Receiver:
    """What receives one topic's messages from an inbox, and the assertions both kinds share."""

    topic: str
    inbox: _Inbox

    def _push(self, event: str | None, pattern: Pattern, broadcast_only: bool = False) -> Callable[[Message], bool]:
        # A push carries this channel's join_ref; a fastlane broadcast carries none (PROTOCOL.md §5),
        # and reaches the client as a push too, so it also satisfies assert_push (as in Phoenix).
        join_ref = getattr(self, "join_ref", None)

        def accept(m: Message) -> bool:
            return (
                m.topic == self.topic and m.ref is None and m.event not in _CONTROL
                and (m.join_ref is None if broadcast_only else m.join_ref in (None, join_ref))
                and (event is None or m.event == event) and matches(pattern, m.payload)
            )
        return accept

    async def _expect(self, accept: Callable[[Message], bool], timeout: float, what: str) -> Message:
        found = await self.inbox.wait(accept, timeout)
        if found is None:
            raise AssertionError(f"expected {what} on {self.topic} within {timeout:g}s{self.inbox.listing(self.topic)}")
        return found

    async def _refute(self, accept: Callable[[Message], bool], timeout: float, what: str) -> None:
        found = await self.inbox.wait(accept, timeout)
        if found is not None:
            raise AssertionError(f"unexpected {what} on {self.topic}: {describe(found)}")

    async def assert_broadcast(self, event: str, payload: Pattern = None, timeout: float = ASSERT_TIMEOUT) -> Any:
        """Wait for a broadcast of ``event`` on this topic matching ``payload``; returns the payload.

        Only fan-out frames count: an intercepted event comes as this channel's push (its
        ``handle_out`` decided), so assert it with ``assert_push``.
        """
        found = await self._expect(self._push(event, payload, broadcast_only=True), timeout, f"a broadcast {event!r} matching {payload!r}")
        return found.payload

    async def refute_broadcast(self, event: str | None = None, payload: Pattern = None, timeout: float = REFUTE_TIMEOUT) -> None:
        """Fail if a matching broadcast (any event when ``event`` is None) comes within ``timeout``."""
        await self._refute(self._push(event, payload, broadcast_only=True), timeout, "broadcast")


class TestSubscription(_Receiver):
    """The test itself subscribed to a topic's broadcasts (Phoenix's ``@endpoint.subscribe``), e.g.
    to see what a ``do: push_to`` or a handler's ``publish`` sends to a topic the test never joined.
    A pubsub subscriber like a connection, so it gets the same fastlane frames."""

    __test__ = False

    def __init__(self, harness: ChannelHarness, topic: str):
        self.topic = topic
        self.inbox = _Inbox()
        self.encoder = FrameEncoder.of(_SERIALIZER)
        """The pubsub's fastlane key: the same frames a V2 connection gets."""
        self._frames = _FrameReader(self.inbox.put)
        self._pubsub = harness.server.pubsub
        self._pubsub.subscribe(topic, self)

    def deliver(self, frame: bytes) -> None:
        self._frames.feed(frame)

    def unsubscribe(self) -> None:
        self._pubsub.unsubscribe(self.topic, self)


class TestChannel(_Receiver):
    """A joined channel as its client sees it, with Phoenix.ChannelTest's assertions."""

    __test__ = False

    def __init__(self, socket: TestSocket, topic: str, join_ref: str):
        self.socket = socket
        self.inbox = socket.inbox
        self.topic = topic
        self.join_ref = join_ref

    def push(self, event: str, payload: Any = None) -> str:
        """Send ``event`` to the channel's ``handle_in``; returns the ref to pass to :meth:`assert_reply`."""
        return self.socket.send(self.join_ref, self.topic, event, payload)

    async def leave(self, timeout: float = ASSERT_TIMEOUT) -> None:
        """``phx_leave``: waits for the ok reply and the ``phx_close`` (``terminate`` has run)."""
        ref = self.push(PHX_LEAVE)
        await self.assert_reply(ref, "ok", timeout=timeout)
        await self.assert_exit("closed", timeout=timeout)

    # -- assertions ---------------------------------------------------------------------------

    def _reply(self, ref: str | None, status: str | None, pattern: Pattern) -> Callable[[Message], bool]:
        def accept(m: Message) -> bool:
            return (
                m.event == PHX_REPLY and m.topic == self.topic and (ref is None or m.ref == ref)
                and (status is None or m.payload.get("status") == status)
                and matches(pattern, m.payload.get("response"))
            )
        return accept

    async def assert_reply(self, ref: str, status: str = "ok", payload: Pattern = None, timeout: float = ASSERT_TIMEOUT) -> Any:
        """Wait for the reply to ``ref`` with ``status`` whose response matches ``payload``; returns the response."""
        found = await self._expect(self._reply(ref, status, payload), timeout, f"a {status!r} reply to ref {ref} matching {payload!r}")
        return found.payload["response"]

    async def refute_reply(self, ref: str | None = None, status: str | None = None, payload: Pattern = None, timeout: float = REFUTE_TIMEOUT) -> None:
        """Fail if a matching reply comes within ``timeout``."""
        await self._refute(self._reply(ref, status, payload), timeout, "reply")

    async def assert_push(self, event: str, payload: Pattern = None, timeout: float = ASSERT_TIMEOUT) -> Any:
        """Wait for a push (or broadcast) of ``event`` matching ``payload``; returns the payload."""
        found = await self._expect(self._push(event, payload), timeout, f"a push {event!r} matching {payload!r}")
        return found.payload

    async def refute_push(self, event: str | None = None, payload: Pattern = None, timeout: float = REFUTE_TIMEOUT) -> None:
        """Fail if a matching push or broadcast (any event when ``event`` is None) comes within ``timeout``."""
        await self._refute(self._push(event, payload), timeout, "push")

    async def assert_exit(self, reason: str | None = None, timeout: float = ASSERT_TIMEOUT) -> str:
        """Wait for the channel to end: ``"crashed"`` (``phx_error``: a callback raised) or ``"closed"``
        (``phx_close``: left, stopped, or replaced by a new join). Returns which."""
        events = {"crashed": (PHX_ERROR,), "closed": (PHX_CLOSE,), None: (PHX_ERROR, PHX_CLOSE)}[reason]
        found = await self._expect(
            lambda m: m.topic == self.topic and m.join_ref == self.join_ref and m.event in events, timeout,
            "the channel to end" if reason is None else f"the channel to end {reason}",
        )
        return "crashed" if found.event == PHX_ERROR else "closed"


_CONTROL = frozenset({PHX_REPLY, PHX_CLOSE, PHX_ERROR})


class ChannelHarness:
    """A server that never listens; the test connects to it in process.

    Use ``async with ChannelHarness(loaded) as channels`` (the ``chanctl_channels`` fixture does).

    Args:
        loaded: the config, compiled (:func:`chanctl.server.compile.compile_config`) or loaded
            (:func:`chanctl.config.load.load_config`; then compiled here).

    Raises:
        ConfigError: a loaded config that does not compile.
    """

    def __init__(self, loaded: CompiledConfig | LoadedConfig):
        self.server: ChannelServer = build_server(loaded)
        """The real server object: ``server.pubsub``, ``server.presence``, ``server.send_info``, ..."""
        self.sockets: list[TestSocket] = []
        self.subscriptions: list[TestSubscription] = []

    def connect(self, user_id: Any, **claims: Any) -> TestSocket:
        """Connect as ``user_id`` with extra token ``claims``: a token is minted and verified by the
        server's own signer, so the channels see what a real connection's token would give them."""
        verified = self.server.signer.verify(self.server.signer.mint(user_id, claims))
        socket = TestSocket(self, verified.claims)
        self.sockets.append(socket)
        return socket

    def subscribe(self, topic: str) -> TestSubscription:
        """Receive ``topic``'s broadcasts in the test itself; assert them with ``assert_broadcast``."""
        subscription = TestSubscription(self, topic)
        self.subscriptions.append(subscription)
        return subscription

    def broadcast(self, topic: str, event: str, payload: Any) -> int:
        """Broadcast from outside any channel (Phoenix's ``Endpoint.broadcast``); returns the recipients."""
        return self.server.publish(topic, event, orjson.loads(orjson.dumps(payload)))

    def unconsumed(self) -> Iterator[Message]:
        """Pushes and broadcasts still in some socket's inbox."""
        for socket in self.sockets:
            yield from socket.unconsumed()
        for subscription in self.subscriptions:
            yield from subscription.inbox.messages

    async def settle(self, timeout: float = ASSERT_TIMEOUT) -> None:
        """Wait until every open socket's server side has handled what the test sent: a heartbeat
        round trip, since a socket's frames are handled and answered strictly in order (§3)."""
        for socket in self.sockets:
            if not socket.closed:
                ref = socket.send(None, PHOENIX_TOPIC, HEARTBEAT, {})
                await socket.inbox.wait(lambda m, ref=ref: m.topic == PHOENIX_TOPIC and m.ref == ref, timeout)

    async def aclose(self) -> None:
        """Close every socket (their channels terminate) and stop the server's timers."""
        for socket in self.sockets:
            if not socket.closed:
                await socket.close()
            await socket.wait_closed()
        await self.server.shutdown()

    async def __aenter__(self) -> ChannelHarness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
