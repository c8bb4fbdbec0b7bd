"""FairReadConnection: a websockets server connection that parses a big read a slice per loop turn.

asyncio reads up to 256 KiB from a socket at once, and websockets' ``data_received`` parses every
frame in that read before it returns to the event loop. A client pushing small frames as fast as
it can fills each read with thousands of them: 50 to 90 ms of parsing in one callback (profiled
under benchmarks/bench_fairness.py's flood), during which no other client is read or answered,
whatever Connection's FAIR_BURST yields later. Here a read over :data:`READ_SLICE` bytes is handed
to websockets a slice at a time, with reading paused until the last slice is in; the next slice
goes in once the frames already parsed are taken (websockets' own queue of received frames is
below its low-water mark), so parsing keeps pace with handling, each in its own short turn.

Order is kept (every byte goes through the one ``_unfed`` buffer, front first) and nothing is
dropped while the connection lives; what is unfed when the connection is lost goes with it.

A read that goes straight through is also where a message can be handled at once: each of its
messages is offered to the connection's :class:`~chanctl.server.transport.AtOnceReader` (the
``reader`` slot) while the connection's reader task waits in ``recv`` with nothing queued ahead,
instead of waking that task for it. A message the reader refuses goes to websockets' queue as
usual, and so does every message after it (the queue is no longer empty), so the order holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

if TYPE_CHECKING:
    from chanctl.server.transport import AtOnceReader

__all__ = ["READ_SLICE", "FairReadConnection"]

READ_SLICE = 4096
"""Bytes of one read handed to websockets per loop turn: about 75 of the flood's 55-byte frames,
0.2-0.4 ms of parsing (websockets parses a frame in 3-6 µs; a whole 256 KiB read took 50-90 ms).
Reads this size or smaller, which is nearly every read of a client that is not flooding, go
straight through."""

_OPEN = State.OPEN
_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY


class FairReadConnection(ServerConnection):
    """websockets' server connection, its reads of an open WebSocket fed in :data:`READ_SLICE` slices.

    Reading is resumed by whichever comes last: the last slice fed, or websockets' queue of parsed
    frames going below its low-water mark (the Assembler's ``resume``, rerouted here): while bytes
    wait unfed, that mark feeds the next slice instead of reading more. This leans on websockets
    17.x's asyncio connection (its ``recv_messages`` Assembler with ``pause``/``resume`` and
    ``paused``), within the range pyproject.toml allows; tests/server/test_fairness.py covers it.
    """

    __slots__ = ("reader", "_direct")

    _unfed: memoryview | None = None
    """What the last big read brought that websockets has not been handed yet (None: nothing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reader: AtOnceReader | None = None
        """Takes a message as soon as it is read (set and cleared through the connection's transport)."""
        self._direct = False
        """True while a read that goes straight through is parsed: only its messages are offered
        to :attr:`reader` (a big read's slices are parsed for the reader task, a slice per turn)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.recv_messages.resume = self._frames_taken

    def data_received(self, data: bytes) -> None:
        if self._unfed is None and (len(data) <= READ_SLICE or self.protocol.state is not _OPEN):
            # The usual read; and the handshake's own bytes, whole.
            self._direct = True
            try:
                super().data_received(data)
            finally:
                self._direct = False
            reader = self.reader
            if reader is not None:
                reader.read_ended()
            return
        self.transport.pause_reading()
        if self._unfed is None:
            self._unfed = memoryview(data)
            self._feed_slice()
        else:  # reading was resumed by someone else meanwhile: behind what waits, in order
            self._unfed = memoryview(bytes(self._unfed) + data)

    def process_event(self, event: Event) -> None:
        reader = self.reader
        if reader is not None and self._direct and not self.recv_messages.frames and self.recv_messages.get_in_progress:
            # The reader task is waiting for a message and none is queued ahead of this one.
            data = _whole_message(event)  # type: ignore[arg-type]  # an open connection's events are frames
            if data is not None and reader.take(data):
                return
        super().process_event(event)

    def _feed_slice(self) -> None:
        unfed = self._unfed
        if unfed is None:
            return  # the connection was lost meanwhile
        rest = unfed[READ_SLICE:]
        self._unfed = rest if rest else None
        super().data_received(bytes(unfed[:READ_SLICE]))
        if self.recv_messages.paused:
            return  # websockets' queue is full: _frames_taken goes on when it has been read
        if self._unfed is None:
            self.transport.resume_reading()
        else:
            self.loop.call_soon(self._feed_slice)

    def _frames_taken(self) -> None:
        """websockets' queue of parsed frames went below its low-water mark: feed on, or read on."""
        if self._unfed is None:
            self.transport.resume_reading()
        else:
            self.loop.call_soon(self._feed_slice)

    def connection_lost(self, exc: Exception | None) -> None:
        self._unfed = None
        super().connection_lost(exc)


def _whole_message(frame: Frame) -> str | bytes | None:
    """A frame that is a whole message, as ``recv`` would return it; None for anything else (a
    fragment, a control frame, text that is not UTF-8), which websockets handles as usual."""
    if not frame.fin:
        return None
    opcode = frame.opcode
    if opcode is _TEXT:
        try:
            return frame.data.decode()
        except UnicodeDecodeError:  # websockets closes with 1007 for it
            return None
    if opcode is _BINARY:
        data = frame.data
        return data if data.__class__ is bytes else bytes(data)
    return None
