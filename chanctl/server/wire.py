"""The fan-out fast path: whole WebSocket frames built once, written once per connection per tick.

Server-to-client frames are never masked (RFC 6455 §5.1), so a broadcast's frame is the same bytes
for every subscriber of a serializer: :class:`FrameEncoder` builds it once, and every connection
appends those bytes to its pending list. :class:`Flusher` then runs once per event-loop tick and
writes each connection's pending frames with a single ``transport.write`` — one syscall per
connection per tick however many frames it got, which is what takes a Python server below the
kernel's one-write-per-frame floor (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from chanctl.protocol.messages import Broadcast, Encoded, Message, Reply
from chanctl.protocol.serializers import BinaryFrame, Serializer

__all__ = ["FRAGMENT", "FrameEncoder", "Flusher", "SharedEncoding", "fragmented", "shared_encoding", "ws_frame"]

log = logging.getLogger("chanctl.wire")

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


FRAGMENT = 16384
"""Bytes of every fragment but the last of a message sent in fragments (a 4-byte header and
``FRAGMENT - 4`` bytes of payload): a transport may cut such a message at any multiple of it."""
_FRAGMENT_PAYLOAD = FRAGMENT - 4
_FRAGMENT_LENGTH = bytes((126,)) + _FRAGMENT_PAYLOAD.to_bytes(2, "big")


def ws_frame(data: bytes) -> bytes:
    """``data`` as one unmasked WebSocket message: binary for a :class:`BinaryFrame`, else text.

    A message of more than ``FRAGMENT - 4`` bytes goes as fragments (RFC 6455 §5.4; every client
    reassembles them, and the message is the same), so that a transport can hand a large message
    to the kernel a fragment at a time, cut only between fragments, without copying it for each
    connection (:class:`~chanctl.server.transport.WebSocketTransport`). Such bytes start with a
    frame whose FIN bit is clear: :func:`fragmented` tells them apart.
    """
    first = _FIN_BINARY if isinstance(data, BinaryFrame) else _FIN_TEXT
    size = len(data)
    if size < 126:
        return bytes((first, size)) + data
    if size <= _FRAGMENT_PAYLOAD:
        return bytes((first, 126)) + size.to_bytes(2, "big") + data
    view = memoryview(data)
    last = (size - 1) // _FRAGMENT_PAYLOAD * _FRAGMENT_PAYLOAD
    tail = size - last
    return b"".join((
        bytes((first & 0x0F,)), _FRAGMENT_LENGTH, view[:_FRAGMENT_PAYLOAD],
        *_continuation_parts(view[_FRAGMENT_PAYLOAD:last]),
        bytes((0x80, tail)) if tail < 126 else b"\x80\x7e" + tail.to_bytes(2, "big"), view[last:],
    ))


def continuation(data: bytes) -> bytes:
    """``data`` as continuation fragments of :data:`FRAGMENT` bytes (the last shorter), none final:
    the middle of a message whose first and last fragments are sent apart."""
    return b"".join(_continuation_parts(memoryview(data)))


def _continuation_parts(view: memoryview) -> list[bytes | memoryview]:
    """Header and payload of each non-final continuation fragment of ``view``, in order."""
    parts: list[bytes | memoryview] = []
    for offset in range(0, len(view), _FRAGMENT_PAYLOAD):
        piece = view[offset:offset + _FRAGMENT_PAYLOAD]
        size = len(piece)
        parts += (b"\x00" + (bytes((size,)) if size < 126 else b"\x7e" + size.to_bytes(2, "big")), piece)
    return parts


def fragmented(frame: bytes) -> bool:
    """Whether ``frame`` (from :func:`ws_frame`) is a message in fragments of :data:`FRAGMENT` bytes."""
    return not frame[0] & 0x80


class SharedEncoding:
    """A serializer's bytes for the message being fanned out, made once whichever transport's
    encoder asks first: a broadcast to WebSocket and LongPoll subscribers costs one JSON encode.

    A one-entry memo keyed by the message's identity (each broadcast is a new, frozen message);
    it holds the last message until the next one. The encoders read and fill it inline (no call
    per encode on the fan-out path).
    """

    __slots__ = ("data", "message")

    def __init__(self) -> None:
        self.message: object = None
        self.data = b""


@functools.cache
def shared_encoding(serializer: Serializer) -> SharedEncoding:
    """The one :class:`SharedEncoding` of ``serializer`` (serializers are stateless singletons)."""
    return SharedEncoding()


class FrameEncoder:
    """A serializer whose output is the complete WebSocket frame; one instance per serializer.

    The pubsub caches encodings per encoder, so a broadcast costs one JSON encode and one frame
    build per serializer in use, whatever the number of subscribers. Other transports' encoders
    subclass it and change :meth:`frame` only.
    """

    _instances: dict[Serializer, FrameEncoder] = {}

    def __init__(self, serializer: Serializer):
        self.serializer = serializer
        self.shared = shared_encoding(serializer)
        self.shared_payload = SharedEncoding()
        """The last :meth:`around` payload's fragments (keyed by the payload's identity)."""

    @classmethod
    def of(cls, serializer: Serializer) -> FrameEncoder:
        """The shared encoder of ``serializer`` for this transport kind."""
        found = cls._instances.get(serializer)
        if found is None:
            found = cls._instances[serializer] = cls(serializer)
        return found

    def encode(self, message: Message | Reply | Broadcast) -> bytes:
        shared = self.shared
        if message is not shared.message:
            shared.data = self.serializer.encode(message)
            shared.message = message
        return self.frame(shared.data)

    frame = staticmethod(ws_frame)
    """Serialized bytes (a reply, a push) as their WebSocket frame."""

    def around(self, message: Message, payload: Encoded) -> list[bytes] | None:
        """``message`` with ``payload`` (replacing its own) as WebSocket fragments whose middle,
        ``payload`` itself, is the same bytes object for every message around the same payload:
        a presence list goes to every joiner of a window without a copy per joiner. None when
        the serializer does not write the payload last (vsn 1.0.0's objects): then encode as usual.
        """
        if len(payload.data) <= _FRAGMENT_PAYLOAD:
            return None  # small: one frame, as any other
        head = self.serializer.encode(message)  # payload None: [J, R, topic, event, null]
        if head[-6:] != b",null]" or head[:1] != b"[":
            return None
        head = head[:-5]
        shared = self.shared_payload
        if shared.message is not payload:
            shared.data = continuation(payload.data)
            shared.message = payload
        start = bytes((_FIN_TEXT & 0x0F, len(head))) if len(head) < 126 else b"\x01\x7e" + len(head).to_bytes(2, "big")
        return [start + head, shared.data, b"\x80\x01]"]


AT_ONCE = 16
"""Connections per loop tick whose first frame of the tick is written when it is made (see
:meth:`Flusher.mark`): enough for a chat room's members, few enough that a fan-out to thousands
still writes nearly all of them once, at the end of the tick."""


class Flusher:
    """Collects the connections that got frames during this tick and flushes them in one callback.

    One ``call_soon`` per tick for the whole server, instead of one per connection or one task
    per write.
    """

    def __init__(self) -> None:
        self._dirty: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._at_once = AT_ONCE

    def mark(self, flush: Callable[[], None]) -> bool:
        """Call ``flush`` at the end of this tick (the caller marks itself once per tick, with its
        first frame). True when the caller may write that first frame at once, the rest of the
        tick's frames going at its end: for the first :data:`AT_ONCE` connections of a tick.

        Written at the end of the tick, a chat message waited for the whole of its handling (its
        reply encoded, the reader's next read set up) and one more loop turn: 0.11-0.12 ms from
        the frame read to the broadcast written, against 0.04-0.06 ms in a plain ``websockets``
        loop, which writes as it broadcasts (benchmarks/README.md, chat)."""
        dirty = self._dirty
        if not dirty:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._run)
        dirty.append(flush)
        if self._at_once:
            self._at_once -= 1
            return True
        return False

    def _run(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._at_once = AT_ONCE
        for flush in dirty:
            try:
                flush()
            except Exception:  # one broken transport must not starve the others
                log.exception("flushing a connection failed")
