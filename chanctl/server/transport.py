"""The transport seam: what a :class:`~chanctl.server.connection.Connection` reads from and writes to.

A connection never touches a socket library. It reads client messages from a :class:`Transport`
(``async for data in transport``), writes the frames of one loop tick with one
:meth:`Transport.write`, asks :meth:`Transport.unsent` how much its client has not taken yet (the
slow-consumer limit), and closes through it. The transport also says how a message becomes the
bytes it writes (:meth:`Transport.encoder`), which is the fastlane key of the pubsub: connections
of the same transport kind and serializer share one encoding of each broadcast.

:class:`WebSocketTransport` is the one for ``websockets`` connections; the test harness
(:mod:`chanctl.testing`) brings an in-memory one, and a LongPoll transport fits the same shape. A
transport is handed to :meth:`ChannelServer.accept <chanctl.server.runtime.ChannelServer.accept>`
with the token claims and the serializer its handshake settled.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.protocol import State

from chanctl.protocol.messages import Broadcast
from chanctl.protocol.serializers import Serializer
from chanctl.server.fairread import FairReadConnection
from chanctl.server.wire import FRAGMENT, FrameEncoder, fragmented

__all__ = ["AtOnceReader", "Transport", "TransportEncoder", "WebSocketTransport"]


class TransportEncoder(Protocol):
    """How messages become the bytes a transport writes; shared by every connection that wants
    the same bytes (the pubsub caches a broadcast's encoding per encoder)."""

    def encode(self, message: Broadcast) -> bytes:
        """A broadcast as written bytes (for a WebSocket, the whole frame)."""
        ...

    def frame(self, data: bytes) -> bytes:
        """Bytes a serializer produced (a reply, a push) as written bytes."""
        ...


class AtOnceReader(Protocol):
    """Who takes a client message as soon as it is read (the connection), where the transport can offer it."""

    def take(self, data: str | bytes) -> bool:
        """Handle ``data`` now, when that needs no await; False: it goes to the iteration instead."""
        ...

    def read_ended(self) -> None:
        """The read that brought messages to :meth:`take` is done (its last message included)."""
        ...


class Transport(Protocol):
    """One client's link, as the connection sees it.

    Invariants a transport keeps, so the connection need not know the socket library:

    - :meth:`write` never blocks and never awaits; it takes whole frames, in order, and either
      writes all of them or none (returning False when the link can no longer carry data frames,
      e.g. while closing), so a client never sees half a frame.
    - nothing else writes data frames on the link meanwhile.
    - iterating ends (without raising) when the link is closed, whoever closed it.
    """

    remote_address: Any
    """Who is at the other end, for logs and the admin plane."""

    needs_idle_timeout: bool
    """True when only the client's own frames (heartbeats) show it is alive, so the connection
    closes it after ``server.idle_timeout`` of silence; False for a transport that ends itself when
    its client goes away (LongPoll: phoenix.js sends no heartbeat there, it polls)."""

    def encoder(self, serializer: Serializer) -> TransportEncoder:
        """The (shared) encoder of this transport kind for ``serializer``."""
        ...

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Client messages: ``str`` for text, ``bytes`` for binary."""
        ...

    def write(self, frames: list[bytes]) -> bool:
        """Write this tick's frames at once; False (nothing written) when the link cannot take them."""
        ...

    def has_more(self) -> bool:
        """Whether more client messages are already here, not yet taken by iterating: the
        connection then leaves what it wrote for the end of the tick, with the answers to those."""
        ...

    def read_at_once(self, reader: AtOnceReader | None) -> None:
        """Offer each client message to ``reader.take`` as it is read, while the iteration is
        waiting with nothing read ahead of it; None stops the offers. Order is kept: a message
        ``take`` refuses, and every message after it, comes through the iteration. A transport
        may never offer (all messages then come through the iteration)."""
        ...

    def unsent(self) -> int:
        """Bytes written and not yet taken by the client (the kernel's share not counted)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``; frames written before go out first."""
        ...

    def abort(self) -> None:
        """Drop the link now, without a closing handshake (a client that stopped reading)."""
        ...

    @property
    def close_code(self) -> int | None:
        """The code the link closed with (None: still open, or closed without a close frame)."""
        ...

    @property
    def close_reason(self) -> str:
        """The reason that came with :attr:`close_code` (empty when none)."""
        ...

    @property
    def closed_here(self) -> bool:
        """Whether this end closed first (the transport itself may, e.g. 1009 for a frame too big)."""
        ...


log = logging.getLogger("chanctl.transport")

_OPEN = State.OPEN


CHUNK = 2 * FRAGMENT
"""At most this much of a large write is handed to asyncio at a time (see :class:`WebSocketTransport`)."""


class WebSocketTransport:
    """A ``websockets`` server connection as a :class:`Transport`.

    Frames go straight to the asyncio transport under the websockets connection, as
    ``websockets.broadcast()`` does, and under the same two conditions, checked on every write:
    the connection is OPEN (no data frame may follow a close frame), and no fragmented message is
    being sent (our frames would land between its fragments). websockets' sans-I/O protocol keeps
    no record of the data frames it sent, so frames written this way and its own control frames
    (pong, close) interleave safely at frame boundaries. Like ``broadcast()``, there is no
    backpressure here: the connection bounds :meth:`unsent` itself.

    **Large writes are not copied per connection.** asyncio's selector transport copies what the
    kernel did not take into a buffer of its own (Python 3.11: a bytearray per transport), so a
    700 KB presence diff fanned out to 10,000 members that read slower than the server writes
    became gigabytes of copies of one shared frame (peak RSS 3 GB in benchmarks/bench_presence.py).
    A write of more than :data:`CHUNK` bytes is kept as it is (the frames themselves, shared with
    every other connection) and handed to asyncio at most :data:`CHUNK` bytes at a time, the next
    piece once asyncio's buffer is empty again (its ``resume_writing``, with the write buffer's
    high-water mark at 0 meanwhile). A large message is in fragments
    (:func:`~chanctl.server.wire.ws_frame`), cut only between them, so websockets' control frames
    still land between frames.
    """

    __slots__ = ("ws", "remote_address", "_protocol", "_transport", "_backlog", "_handed", "_waiting")  # one per client

    needs_idle_timeout = True

    def __init__(self, ws: FairReadConnection):
        self.ws = ws
        self.remote_address = ws.remote_address
        self._protocol = ws.protocol
        self._transport = ws.transport
        # websockets keeps its senders waiting on a full buffer in a deque, whose first block costs
        # some 600 bytes even empty, on every connection. Its own send path (the closing frame only,
        # here) appends, removes and iterates it: a list does all three and costs 56 bytes empty.
        ws.drain_waiters = []  # type: ignore[assignment]
        self._backlog: deque[bytes] | None = None
        """Frames written and not yet handed to asyncio (None when there are none: most of the time)."""
        self._handed = 0
        """Bytes of the backlog's first frame already handed to asyncio."""
        self._waiting = 0
        """Bytes in the backlog not yet handed to asyncio."""

    def encoder(self, serializer: Serializer) -> FrameEncoder:
        return FrameEncoder.of(serializer)

    def __aiter__(self) -> WebSocketTransport:
        # Its own iterator, not an async generator over ``ws``'s (itself a generator over
        # ``recv``): two generator layers fewer per connection held, and per message read.
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed:  # whoever closed it, however: the iteration ends
            raise StopAsyncIteration from None

    def has_more(self) -> bool:
        return bool(self.ws.recv_messages.frames)  # parsed frames websockets holds for recv()

    def read_at_once(self, reader: AtOnceReader | None) -> None:
        self.ws.reader = reader

    def write(self, frames: list[bytes]) -> bool:
        if self._protocol.state is not _OPEN:
            return False  # closing: the close frame is (or is about to be) the last one
        if self.ws.send_in_progress is not None:
            # chanctl never sends fragmented messages; if something did, say so, as broadcast() does.
            log.warning("skipped %d frames to %s: a fragmented message is being sent", len(frames), self.remote_address)
            return False
        if self._backlog is None:
            if len(frames) == 1:
                data = frames[0]
                if len(data) <= CHUNK:
                    self._transport.write(data)
                    return True
            else:
                size = sum(map(len, frames))
                if size <= CHUNK:
                    self._transport.write(b"".join(frames))
                    return True
            self._backlog = deque()
        self._backlog.extend(frames)
        self._waiting += sum(map(len, frames))
        self._pump()
        return True

    def _pump(self) -> None:
        """Hand asyncio the backlog, :data:`CHUNK` bytes at a time, while its own buffer is empty."""
        backlog, transport = self._backlog, self._transport
        if backlog is None:
            return
        if self._protocol.state is not _OPEN:
            self._drop_backlog()
            return
        while backlog:
            if transport.get_write_buffer_size():
                # The kernel took less than the last piece: go on when asyncio's buffer is empty.
                transport.set_write_buffer_limits(0)  # pauses websockets' side now, resumes it at 0
                self.ws.drained = self._pump  # type: ignore[attr-defined]  # _WebSocket.resume_writing
                return
            transport.write(self._piece(backlog))
        self._drop_backlog()

    def _piece(self, backlog: deque[bytes]) -> bytes | memoryview:
        """The next piece of at most :data:`CHUNK` bytes: a cut of a large fragmented message
        between two of its fragments, or whole frames (the rest of a cut one first)."""
        first, start = backlog[0], self._handed
        if len(first) - start > CHUNK and fragmented(first):
            self._handed = start + CHUNK
            self._waiting -= CHUNK
            return memoryview(first)[start:start + CHUNK]
        backlog.popleft()
        self._handed = 0
        pieces: list[bytes | memoryview] = [memoryview(first)[start:] if start else first]
        size = len(first) - start
        while backlog and size + len(backlog[0]) <= CHUNK:
            pieces.append(backlog.popleft())
            size += len(pieces[-1])
        self._waiting -= size
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _drop_backlog(self) -> None:
        if self._backlog is not None:
            self._backlog = None
            self._handed = self._waiting = 0
            ws = self.ws
            if getattr(ws, "drained", None) is not None:
                ws.drained = None  # type: ignore[attr-defined]  # _WebSocket's slot, set by _pump
                self._transport.set_write_buffer_limits(ws.write_limit_high, ws.write_limit_low)

    def _hand_over_backlog(self) -> None:
        """Everything written goes to asyncio now (before a close frame: frames written go first)."""
        backlog = self._backlog
        if backlog is not None and backlog and self._protocol.state is _OPEN:
            first = backlog.popleft()
            self._transport.write(memoryview(first)[self._handed:])
            for frame in backlog:
                self._transport.write(frame)
        self._drop_backlog()

    def unsent(self) -> int:
        return self._transport.get_write_buffer_size() + self._waiting

    async def close(self, code: int, reason: str) -> None:
        self._hand_over_backlog()
        await self.ws.close(code, reason)

    def abort(self) -> None:
        self._drop_backlog()
        self._transport.abort()

    @property
    def close_code(self) -> int | None:
        # websockets' own close_code is the code *received*: when websockets closes first (1009
        # for a frame over max_size) and the TCP connection goes before the client's echo, it
        # says 1006, though the link ended with the 1009 we sent.
        sent = self._sent_first()
        return sent.code if sent is not None else self.ws.close_code

    @property
    def close_reason(self) -> str:
        sent = self._sent_first()
        return sent.reason if sent is not None else (self.ws.close_reason or "")

    @property
    def closed_here(self) -> bool:
        return self._sent_first() is not None

    def _sent_first(self) -> Close | None:
        """Our close frame, if we sent it before the client sent one."""
        protocol = self._protocol
        sent, received = protocol.close_sent, protocol.close_rcvd
        if sent is not None and (received is None or not protocol.close_rcvd_then_sent):
            return sent
        return None
