"""Connection: one live WebSocket, its SocketProtocol, a reader and a bounded writer.

Frames are read and dispatched strictly in order (a join blocks the socket until its callback
returns, as in Phoenix). Outbound frames go to a byte-bounded queue drained by one writer task, so
``deliver`` never blocks a broadcast; a client that stops reading is closed once its queue passes
``outbound_buffer`` (1013, "slow consumer") instead of growing server memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chanctl.channel import Channel, Outcome
from chanctl.errors import ProtocolViolation
from chanctl.protocol.serializers import Serializer
from chanctl.protocol.socket import ChannelState, Deliver, Join, Leave, LeaveReason, SocketProtocol

if TYPE_CHECKING:
    from chanctl.server.runtime import ChannelServer

__all__ = ["Connection"]

log = logging.getLogger("chanctl.connection")


class Connection:
    """One client connection. ``deliver`` is the fan-out entry point; the rest is the read loop."""

    def __init__(self, server: ChannelServer, ws: ServerConnection, user: dict[str, Any], serializer: Serializer):
        self.server = server
        self.ws = ws
        self.user = user
        self.assigns: dict[str, Any] = {}
        self.serializer = serializer
        limits = server.config.server
        self.proto = SocketProtocol(serializer, server.router, max_channels=limits.max_channels)
        self._outbox: deque[bytes] = deque()
        self._queued_bytes = 0
        self._max_queued = limits.outbound_buffer
        self._wakeup = asyncio.Event()
        self._closing = False
        self._dispatch = asyncio.Lock()
        """Held while a handler callback runs: client events and handle_info never interleave."""

    # -- outbound ----------------------------------------------------------------------------

    def deliver(self, frame: bytes) -> None:
        """Queue one encoded frame for this client; never blocks."""
        if self._closing:
            return
        self._outbox.append(frame)
        self._queued_bytes += len(frame)
        if self._queued_bytes > self._max_queued:
            self.server.stats.slow_consumers += 1
            log.warning("closing slow consumer %s: %d bytes queued", self.ws.remote_address, self._queued_bytes)
            self.close(1013, "slow consumer")
            return
        self._wakeup.set()

    def flush(self) -> None:
        """Move the frames the protocol produced into the outbox."""
        for frame in self.proto.data_to_send():
            self.deliver(frame)

    def push(self, channel: ChannelState, event: str, payload: Any) -> None:
        self.proto.push(channel, event, payload)
        self.flush()

    def reply(self, channel: ChannelState, ref: str | None, outcome: Outcome) -> None:
        self.proto.reply(channel, ref, outcome.status, outcome.response)
        self.flush()

    def close(self, code: int, reason: str) -> None:
        """Close from anywhere without awaiting: queued frames are dropped."""
        if self._closing:
            return
        self._closing = True
        self._outbox.clear()
        self._queued_bytes = 0
        self._wakeup.set()
        self.server.spawn(self.ws.close(code, reason))

    async def _writer(self) -> None:
        ws, outbox = self.ws, self._outbox
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while outbox:
                frame = outbox.popleft()
                self._queued_bytes -= len(frame)
                await ws.send(frame, text=True)
            if self._closing:
                return

    # -- inbound -----------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        idle = self.server.config.server.idle_timeout
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(idle) as deadline:
                async for data in self.ws:
                    deadline.reschedule(loop.time() + idle)
                    try:
                        actions = self.proto.receive(data)
                    except ProtocolViolation as exc:
                        log.info("closing %s: %s", self.ws.remote_address, exc.reason)
                        self.server.stats.protocol_violations += 1
                        self.flush()
                        self.close(exc.code, exc.reason[:120])
                        break
                    async with self._dispatch:
                        for action in actions:
                            await self._apply(action)
                        self.flush()
        except TimeoutError:
            self.close(1001, "idle timeout")
        except ConnectionClosed:
            pass
        finally:
            for leave in self.proto.close_all():
                await self._leave(leave)
            if not self._closing:
                self._closing = True
                self._wakeup.set()
            try:
                await asyncio.wait_for(writer, timeout=1)
            except (TimeoutError, ConnectionClosed):
                writer.cancel()

    async def _apply(self, action: Join | Deliver | Leave) -> None:
        if isinstance(action, Deliver):
            await self._deliver(action)
        elif isinstance(action, Join):
            await self._join(action)
        else:
            await self._leave(action)

    async def _join(self, join: Join) -> None:
        handler: Channel = join.route.target()
        handler._bind(self, join.topic, join.route.captures)
        try:
            outcome = await handler._run_join(join.payload)
        except Exception:
            log.exception("join crashed on %s", join.topic)
            self.proto.join_crashed(join)
            return
        if outcome is None or outcome.status == "ok":
            channel = self.proto.join_succeeded(join, None if outcome is None else outcome.response, handler)
            handler._state = channel
            self.server.pubsub.subscribe(join.topic, self, channel)
        else:
            self.proto.join_refused(join, outcome.response)

    async def _deliver(self, action: Deliver) -> None:
        channel = action.channel
        handler: Channel = channel.handler
        handler._ref = action.ref
        try:
            outcome = await handler.handle_in(action.event, action.payload)
        except Exception:
            log.exception("channel crashed on %s handling %r", channel.topic, action.event)
            await self._crash(channel)
            return
        finally:
            handler._ref = None
        if outcome is not None:
            self.proto.reply(channel, action.ref, outcome.status, outcome.response)

    def send_info(self, channel: ChannelState, message: Any) -> None:
        """Queue ``message`` for the channel's ``handle_info``, after the callback running now."""
        self.server.spawn(self._info(channel, message))

    async def _info(self, channel: ChannelState, message: Any) -> None:
        async with self._dispatch:
            if channel.closed:
                return
            try:
                await channel.handler.handle_info(message)
            except Exception:
                log.exception("channel crashed on %s handling info %r", channel.topic, message)
                await self._crash(channel)
            self.flush()

    async def _crash(self, channel: ChannelState) -> None:
        leave = self.proto.crash(channel)
        if leave is not None:
            await self._leave(leave)

    async def _leave(self, leave: Leave) -> None:
        channel = leave.channel
        channel.handler._stop()
        self.server.pubsub.unsubscribe(channel.topic, self, channel)
        if leave.reason is LeaveReason.DUPLICATE_JOIN:
            return  # Phoenix kills the old channel without running terminate (§3.3).
        try:
            await channel.handler.terminate(leave.reason)
        except Exception:
            log.exception("terminate crashed on %s", channel.topic)
