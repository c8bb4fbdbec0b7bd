"""One load-generator connection: websockets' sans-I/O handshake, then frames read in place.

A delivery in a fan-out costs the generator what it costs to find one frame in the bytes the
server wrote. websockets' own parser spends about 4 µs a frame (a generator step, a ``Frame``, an
event object); servers like chanctl write many frames in one segment, and reading their headers
straight out of that buffer takes about 1.9 µs, so the generator is not the limit it measures.
Everything with a rule to follow stays with websockets: the upgrade request and the check of its
response (``ClientProtocol``), and masked client frames (``Frame.serialize``). Phoenix frames are
encoded and decoded by ``chanctl.protocol``'s serializer, the same one the server and client use.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from chanctl.errors import ConnectionLost, ConnectRefused, ProtocolViolation, Unreachable
from chanctl.protocol.messages import PHX_JOIN, PHX_REPLY, Message, Reply
from chanctl.protocol.serializers import V2Json

__all__ = ["MAX_FRAME", "BenchSocket", "FrameHandler"]

MAX_FRAME = 64 * 1024 * 1024
"""The largest frame (or fragmented message) a bench socket buffers; a server sending more is
dropped with 1009, so a broken server cannot make the generator swallow the machine's memory."""

TEXT, BINARY, CLOSE, PING, CONT = 0x1, 0x2, 0x8, 0x9, 0x0

FrameHandler = Callable[["BenchSocket", bytes, int, int, int], bool]
"""``handler(socket, buf, start, end, opcode)`` sees every data frame first, as the slice
``buf[start:end]`` of the bytes received (not copied); it returns True when it consumed the frame.
Frames it leaves are decoded: replies resolve their ref, the rest go to ``on_message``."""

_SERIALIZER = V2Json()
_REPLY_MARK = PHX_REPLY.encode()


class BenchSocket(asyncio.Protocol):
    """A Phoenix socket reduced to what a load generator needs: connect, join, push, count.

    Args:
        url: the full ``ws://`` URL, query included (token, vsn).
        handler: the fast path for data frames (see :data:`FrameHandler`).
        on_message: decoded frames that are not replies (pushes, broadcasts, presence).
        on_close: called once when the connection ends, with the close code (1006 when dropped).
    """

    def __init__(
        self,
        url: str,
        handler: FrameHandler | None = None,
        on_message: Callable[[BenchSocket, Message], None] | None = None,
        on_close: Callable[[BenchSocket, int], None] | None = None,
    ):
        self.url = url
        self.handler = handler
        self.on_message = on_message
        self.on_close = on_close
        self.frames = 0
        """Data frames received."""
        self.bytes = 0
        """Bytes received after the handshake."""
        self.close_code: int | None = None
        self.closed_by_us = False
        """True once this side called close() or abort(): the scenario tells its own drops from the server's."""
        self.tag: Any = None
        """Whatever the scenario keeps with this socket (its index, its presence list)."""
        self._handshake: ClientProtocol | None = None
        self._opened: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = TEXT
        self._refs = 0
        self._pending: dict[str, asyncio.Future[Reply]] = {}

    # -- opening -----------------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Connect and complete the WebSocket handshake.

        Raises:
            ConnectRefused: the server answered the upgrade with another HTTP status (403: token).
            Unreachable: no TCP connection, no valid answer, or none within ``timeout``.
        """
        try:
            uri = parse_uri(self.url)
        except InvalidURI as exc:
            raise Unreachable(self.url, str(exc)) from None
        loop = asyncio.get_running_loop()
        self._handshake = ClientProtocol(uri, max_size=MAX_FRAME)
        self._opened = loop.create_future()
        context = ssl.create_default_context() if uri.secure else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: self, uri.host, uri.port, ssl=context)
                await self._opened
        except TimeoutError:
            self.abort()
            raise Unreachable(self.url, f"no handshake within {timeout:g} s") from None
        except OSError as exc:
            raise Unreachable(self.url, exc.strerror or str(exc)) from None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self._handshake is not None
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        self._handshake.send_request(self._handshake.connect())
        for data in self._handshake.data_to_send():
            transport.write(data)

    def _handshake_data(self, data: bytes) -> None:
        proto = self._handshake
        assert proto is not None and self._opened is not None
        proto.receive_data(data)
        events = proto.events_received()
        if not events:
            return
        self._handshake = None
        response = events[0]
        if proto.handshake_exc is not None or not isinstance(response, Response):
            self._fail_open(proto.handshake_exc)
            return
        if not self._opened.done():
            self._opened.set_result(None)
        for frame in events[1:]:  # frames that came in the same segment as the 101
            if isinstance(frame, Frame) and frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                data = bytes(frame.data)
                self._data_frame(data, 0, len(data), TEXT if frame.opcode is Opcode.TEXT else BINARY)

    def _fail_open(self, exc: BaseException | None) -> None:
        assert self._opened is not None
        if isinstance(exc, InvalidStatus):
            body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
            error: Exception = ConnectRefused(exc.response.status_code, body)
        else:
            error = Unreachable(self.url, f"invalid handshake response: {exc}")
        if not self._opened.done():
            self._opened.set_exception(error)
        self.abort()

    # -- frames in ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._handshake_data(data)
            return
        self.bytes += len(data)
        buf = self._buf + data if self._buf else data
        pos, size_all, handler = 0, len(buf), self.handler
        while size_all - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            size, start = second & 0x7F, pos + 2
            if size == 126:
                if size_all - pos < 4:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif size == 127:
                if size_all - pos < 10:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if second & 0x80 or size > MAX_FRAME:
                # RFC 6455 §5.1: a client fails a connection whose server masks its frames.
                self._fail(1009 if size > MAX_FRAME else 1002)
                return
            end = start + size
            if end > size_all:
                break
            opcode = first & 0x0F
            if first & 0x80 and opcode in (TEXT, BINARY):
                # The hot path, inlined: one call to the scenario's handler per delivery.
                self.frames += 1
                if handler is None or not handler(self, buf, start, end, opcode):
                    self._decode(buf, start, end, opcode)
            else:
                self._other_frame(first, opcode, buf[start:end])
            pos = end
        self._buf = buf[pos:] if pos < size_all else b""
        if len(self._buf) > MAX_FRAME + 10:
            self._fail(1009)

    def _other_frame(self, first: int, opcode: int, data: bytes) -> None:
        if opcode in (TEXT, BINARY, CONT):  # a fragmented message (RFC 6455 §5.4)
            if opcode != CONT:
                self._fragments, self._fragment_opcode = [], opcode
            self._fragments.append(data)
            if sum(map(len, self._fragments)) > MAX_FRAME:
                self._fail(1009)
            elif first & 0x80:
                message, self._fragments = b"".join(self._fragments), []
                self._data_frame(message, 0, len(message), self._fragment_opcode)
        elif opcode == PING:
            self._write(Frame(Opcode.PONG, data))
        elif opcode == CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            if self.close_code is None:
                self.close_code = code
            self._write(Frame(Opcode.CLOSE, data[:2]))
            if self._transport is not None:
                self._transport.close()

    def _data_frame(self, buf: bytes, start: int, end: int, opcode: int) -> None:
        self.frames += 1
        if self.handler is None or not self.handler(self, buf, start, end, opcode):
            self._decode(buf, start, end, opcode)

    def _decode(self, buf: bytes, start: int, end: int, opcode: int) -> None:
        data = buf[start:end]
        try:
            message = _SERIALIZER.decode(data.decode() if opcode == TEXT else data)
        except (ProtocolViolation, UnicodeDecodeError):
            return  # not a Phoenix frame: counted, nothing to route
        if message.event == PHX_REPLY and message.ref is not None:
            future = self._pending.pop(message.ref, None)
            if future is not None and not future.done():
                future.set_result(Reply.from_message(message))
                return
        if self.on_message is not None:
            self.on_message(self, message)

    def is_reply(self, buf: bytes, start: int, end: int) -> bool:
        """Whether the frame at ``buf[start:end]`` mentions ``phx_reply`` (a cheap test, no decode)."""
        return buf.find(_REPLY_MARK, start, end) >= 0

    # -- frames out --------------------------------------------------------------------------

    def _write(self, frame: Frame) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame.serialize(mask=True, extensions=[]))

    def send(self, message: Message) -> None:
        """Encode and send ``message`` as it is (refs included)."""
        self._write(Frame(Opcode.TEXT, _SERIALIZER.encode(message)))

    def request(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> asyncio.Future[Reply]:
        """Send with a fresh ref; the future resolves with the reply (ConnectionLost if the socket ends first)."""
        self._refs += 1
        ref = str(self._refs)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self._transport is None or self._transport.is_closing():
            future.set_exception(ConnectionLost())
            return future
        self._pending[ref] = future
        join_ref = ref if event == PHX_JOIN else join_ref
        self.send(Message(join_ref, ref, topic, event, payload))
        return future

    def push(self, topic: str, event: str, payload: Any, join_ref: str | None) -> None:
        """Send without waiting for the reply (the scenario counts replies on its fast path)."""
        self._refs += 1
        self.send(Message(join_ref, str(self._refs), topic, event, payload))

    # -- closing -----------------------------------------------------------------------------

    @property
    def open_now(self) -> bool:
        return self._transport is not None and not self._transport.is_closing() and self._handshake is None

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake and drop the connection (a load generator does not wait)."""
        self.closed_by_us = True
        if self.close_code is None:
            self.close_code = code
        self._write(Frame(Opcode.CLOSE, code.to_bytes(2, "big")))
        if self._transport is not None:
            self._transport.close()

    def _fail(self, code: int) -> None:
        """Close because the server broke the protocol (1002) or sent too much (1009)."""
        self.close_code = code
        self._write(Frame(Opcode.CLOSE, code.to_bytes(2, "big")))
        if self._transport is not None:
            self._transport.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake, as a lost network would."""
        self.closed_by_us = True
        if self.close_code is None:
            self.close_code = 1006
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None and self._opened is not None and not self._opened.done():
            self._handshake.receive_eof()
            events = self._handshake.events_received()
            if events and self._handshake.handshake_exc is not None:
                self._fail_open(self._handshake.handshake_exc)
            else:
                self._opened.set_exception(Unreachable(self.url, "the server closed the connection during the handshake"))
        self._transport = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost())
                future.exception()  # retrieved: the scenario may have stopped waiting
        if self.close_code is None:
            self.close_code = 1006
        if self.on_close is not None:
            self.on_close(self, self.close_code)
