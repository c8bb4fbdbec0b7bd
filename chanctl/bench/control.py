"""The pipe between the coordinator and a worker process, read by the event loop without blocking.

Messages are ``(kind, data)`` tuples of plain values: ``ready``, ``progress``, ``completed``,
``settled``, ``result`` from a worker; ``go``, ``leave``, ``stop`` to it.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Control"]


class Control:
    """One end of a ``multiprocessing.Pipe``; what arrives is queued for ``recv``.

    Args:
        conn: the pipe end.
        on_message: called with each message instead of queueing it (the coordinator's dispatch).
    """

    def __init__(self, conn: Connection, on_message: Any = None):
        self.conn = conn
        self.closed = False
        self._on_message = on_message
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if self._on_message is not None:
                    self._on_message(message)
                else:
                    self._inbox.put_nowait(message)
        except (EOFError, OSError):
            self._loop.remove_reader(self.conn.fileno())
            self.closed = True
            if self._on_message is not None:
                self._on_message(("eof", None))
            else:
                self._inbox.put_nowait(("eof", None))

    def send(self, kind: str, data: Any = None) -> None:
        if not self.closed:
            try:
                self.conn.send((kind, data))
            except (BrokenPipeError, OSError):
                self.closed = True

    async def recv(self) -> tuple[str, Any]:
        return await self._inbox.get()

    def close(self) -> None:
        if not self.closed:
            self._loop.remove_reader(self.conn.fileno())
            self.closed = True
        self.conn.close()
