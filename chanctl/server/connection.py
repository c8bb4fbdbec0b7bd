"""Connection: one live WebSocket, its SocketProtocol, a reader, and a bounded outbound path.

Frames are read and dispatched strictly in order (a join blocks the socket until its callback
returns, as in Phoenix). The link itself is a :class:`~chanctl.server.transport.Transport`, so
nothing here knows the socket library. Outbound frames are what the transport's encoder makes
(for a WebSocket, complete frames; see :mod:`chanctl.server.wire`): ``deliver`` writes a
connection's first frame of a loop tick at once (for the first few connections of the tick) and
appends the rest to a pending list that the server's :class:`~chanctl.server.wire.Flusher` hands
to the transport at the end of the tick, so a broadcast costs no task and no await per subscriber. What a
client has not read stays in its transport's buffer; past ``outbound_buffer`` bytes the connection
is closed (1013, "slow consumer") and counted, instead of growing server memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from chanctl.channel import Channel, Outcome, error
from chanctl.errors import PresenceError, ProtocolViolation
from chanctl.protocol.messages import ACCESS_TOKEN, Broadcast, Encoded, Message, Ref
from chanctl.protocol.ratelimit import TokenBucket
from chanctl.protocol.serializers import Serializer
from chanctl.protocol.socket import ChannelState, Deliver, Join, Leave, LeaveReason, Refresh, SocketProtocol
from chanctl.server.behaviours import DeclarativeChannel
from chanctl.server.context import ChannelContext
from chanctl.server.sessions import token_key
from chanctl.escape import shown

if TYPE_CHECKING:
    from chanctl.server.runtime import ChannelServer
    from chanctl.server.sessions import Session
    from chanctl.server.transport import Transport

__all__ = ["Connection", "peer_address"]

log = logging.getLogger("chanctl.connection")

_UNENCODABLE = (TypeError, ProtocolViolation)
"""What serializers raise for a payload they cannot carry (orjson's JSONEncodeError is a TypeError;
binary fields over 255 bytes are a ProtocolViolation)."""
FAIR_BURST = 32
"""Client messages one connection handles before it lets the event loop serve everyone else.
Messages a client sent ahead are read without a suspension, so without this one client pushing
as fast as it can holds the loop until its buffer is empty (another client's heartbeat round trip
went to over a second; benchmarks/bench_fairness.py). 32 messages are about 1 ms of work, and the
yield costs one loop iteration per 32 messages, under 0.1 µs a message."""
SLOW_CONSUMER_GRACE = 1.0
"""Seconds a slow consumer gets to take its close frame before the TCP connection is aborted."""


def _to_the_end(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (see :meth:`Connection.take`) to its end, here."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("a client event handled at once suspended")  # a bug in DeclarativeChannel's handle_in


def peer_address(address: Any) -> str | None:
    """``host:port`` (``[v6]:port``) of a peer, as the log and the admin plane show it."""
    if not address:
        return None
    host = str(address[0])
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


class Connection:
    """One client connection. ``deliver`` is the fan-out entry point; the rest is the read loop."""

    # Slots: an idle server holds one of these per client (benchmarks/README.md, idle RSS).
    __slots__ = (
        "server", "transport", "user", "socket_id", "assigns", "serializer", "encoder", "proto", "_pending",
        "_pending_bytes", "_max_buffered", "_closing", "_handling", "_taken", "_ahead", "_dispatch", "_closed", "_last_seen", "_idle_key",
        "_close_code", "_close_reason", "connected_at", "session", "__weakref__",
    )

    def __init__(
        self, server: ChannelServer, transport: Transport, user: dict[str, Any], serializer: Serializer,
        socket_id: str | None = None,
    ):
        self.server = server
        self.transport = transport
        """The client's link; the connection reads, writes and closes only through it."""
        self.user = user
        self.socket_id = socket_id
        """The socket id (PROTOCOL.md §4); ``server.disconnect(socket_id)`` closes every socket of it."""
        self.assigns: dict[str, Any] = {}
        self.serializer = serializer
        self.encoder = transport.encoder(serializer)
        """What the transport writes for this serializer; the pubsub's fastlane key."""
        limits = server.config.server
        rate = limits.rate_limit
        self.proto = SocketProtocol(
            serializer, server.router, max_channels=limits.max_channels, stats=server.stats.protocol,
            max_name_length=limits.max_name_length, max_join_payload=limits.max_join_payload,
            rate_limit=None if rate is None else TokenBucket(rate.per_second, rate.burst, last=asyncio.get_running_loop().time()),
        )
        self._pending: list[bytes] | None = None
        """This tick's frames (empty once its first went at once); None, not an empty list, between
        ticks (an idle server holds one per client)."""
        self._pending_bytes = 0
        self._max_buffered = limits.outbound_buffer
        self._closing = False
        self._handling = False
        """True while a message of this client is handled: its own frames then wait for the answer."""
        self._taken = 0
        """Messages of the current read handled by :meth:`take` (at most :data:`FAIR_BURST`)."""
        self._ahead: tuple[str | bytes, Message] | None = None
        """A message :meth:`take` decoded and left to the reader task, whose next message it is:
        decoded once, not again there."""
        self._dispatch = asyncio.Lock()
        """Held while a handler callback runs: client events and handle_info never interleave."""
        self._closed: asyncio.Task[None] | None = None
        self._last_seen = 0.0
        self._idle_key: int | None = None
        """The idle deadline's key in ``server.deadlines`` while one is set."""
        self._close_code: int | None = None
        self._close_reason = ""
        self.connected_at = time.time()
        self.session: Session | None = None
        """This socket's token lifecycle (expiry, refresh); None for an in-process test socket."""

    # -- outbound ----------------------------------------------------------------------------

    def deliver(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame for this client; never blocks, never awaits.

        The first frame of a tick may go at once (:meth:`Flusher.mark
        <chanctl.server.wire.Flusher.mark>` says), unless this client's own message is being
        handled (its frames then go with the reply, see :meth:`run`); what follows in the tick
        waits for its end and goes in one write, after it."""
        if self._closing:
            return
        pending = self._pending
        if pending is not None:  # this tick has begun for this connection
            pending.append(frame)
        elif self.server.flusher.mark(self._write_pending) and not self._handling:
            self._pending = [frame]
            self._pending_bytes = len(frame)
            self._write_pending()
            if not self._closing:
                self._pending = []  # the rest of the tick's frames wait for its end
            return
        else:
            self._pending = [frame]
        self._pending_bytes += len(frame)
        if self._pending_bytes > self._max_buffered:
            self._slow_consumer()

    def _write_pending(self) -> None:
        """Write this tick's frames with one ``transport.write`` (called by the Flusher)."""
        pending, self._pending = self._pending, None
        size, self._pending_bytes = self._pending_bytes, 0
        if self._closing or not pending:
            return
        transport = self.transport
        if not transport.write(pending):
            return
        stats = self.server.stats
        stats.messages_out += len(pending)
        stats.bytes_out += size
        if transport.unsent() > self._max_buffered:
            self._slow_consumer()

    def _slow_consumer(self) -> None:
        stats = self.server.stats
        stats.slow_consumers += 1
        stats.over_limit["server.outbound_buffer"] += 1
        log.warning("closing slow consumer %s: more than %d bytes unread", peer_address(self.transport.remote_address), self._max_buffered)
        self._drop_pending()
        self.close(1013, "slow consumer")
        # It is not reading, so it will not answer the close handshake either: do not hold its
        # buffer for websockets' whole close timeout.
        asyncio.get_running_loop().call_later(SLOW_CONSUMER_GRACE, self.transport.abort)

    def allow_unsent(self, size: int) -> None:
        """Let this connection's unsent output reach ``size`` bytes before it is a slow consumer
        (never less than ``server.outbound_buffer``): for the admin plane's watchers, whose frames
        are sized by the admin plane's own caps, not by a client's messages."""
        self._max_buffered = max(self._max_buffered, size)

    def unsent(self) -> int:
        """Bytes queued for this client and not yet taken by the kernel."""
        return self._pending_bytes + self.transport.unsent()

    def _drop_pending(self) -> None:
        self._pending = None
        self._pending_bytes = 0

    def _queue_output(self) -> None:
        """Move the frames the protocol produced (replies, pushes, phx_close) into the pending list
        that the server's Flusher writes at the end of the tick."""
        for frame in self.proto.data_to_send():
            self.deliver(self.encoder.frame(frame))

    def push(self, channel: ChannelState, event: str, payload: Any) -> None:
        if payload.__class__ is Encoded:
            if not channel.closed:
                parts = self.encoder.around(Message(channel.reply_join_ref, None, channel.topic, event, None), payload)
                if parts is not None:
                    self._queue_output()  # what was queued before goes first
                    for part in parts:
                        self.deliver(part)
                    return
            payload = payload.fragment
        self.proto.push(channel, event, payload)
        self._queue_output()

    def reply(self, channel: ChannelState, ref: Ref, outcome: Outcome) -> None:
        self.server.stats.replies[outcome.status] += 1
        self.proto.reply(channel, ref, outcome.status, outcome.response)
        self._queue_output()

    def notify(self, event: str, payload: Any) -> None:
        """Push ``event`` to the socket itself, on topic ``phoenix`` (e.g. ``token_expiring``)."""
        self.proto.notify(event, payload)
        self._queue_output()

    def close(self, code: int, reason: str) -> None:
        """Close from anywhere without awaiting; frames already queued are written first."""
        if self._closing:
            return
        self._write_pending()
        self._closing = True
        self._close_code = code
        self._close_reason = reason
        self._closed = self.server.spawn(self.transport.close(code, reason))

    @property
    def close_code(self) -> int | None:
        """The code this connection ended with: ours if the server closed it, else the client's."""
        return self.ending()[0]

    def ending(self) -> tuple[int | None, str, str]:
        """How this connection ended: close code, reason, and who closed: ``server`` (this
        connection, or the transport itself, as websockets does with 1009 for a frame over
        ``max_size``), ``client``, or ``dropped`` when no close frame came (1006)."""
        if self._close_code is not None:
            return self._close_code, self._close_reason, "server"
        transport = self.transport
        code = transport.close_code
        if code is None or code == 1006:
            return code, "", "dropped"
        return code, transport.close_reason, "server" if transport.closed_here else "client"

    # -- idle timeout (the runtime owns time; a lazy deadline costs one float store per frame) --

    def _arm_idle(self, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        self._last_seen = loop.time()
        self._idle_key = self.server.deadlines.add(self._last_seen + idle, self)

    def deadline_passed(self) -> None:
        """The idle deadline (:class:`~chanctl.server.deadlines.Deadlines`): close, or set it
        again from the last frame seen."""
        loop, idle = asyncio.get_running_loop(), self.server.config.server.idle_timeout
        due = self._last_seen + idle
        if due > loop.time():
            self._idle_key = self.server.deadlines.add(due, self)
        else:
            self._idle_key = None
            self.close(1001, f"idle timeout: no frame for {idle:g}s")

    # -- inbound -----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport.needs_idle_timeout:
            self._arm_idle(loop, self.server.config.server.idle_timeout)
        proto, dispatch, transport = self.proto, self._dispatch, self.transport
        burst = 0
        try:
            async for data in transport:
                ahead, self._ahead = self._ahead, None
                if self._closing:
                    # Read on and discard until the client's close frame: a client still sending
                    # would otherwise stall the close handshake behind its unread frames.
                    continue
                now = self._counted_in(data, loop)
                try:
                    if ahead is not None and ahead[0] == data:
                        actions = proto.receive_message(ahead[1], now, len(data))
                    else:
                        actions = proto.receive(data, now)
                except ProtocolViolation as exc:
                    self._violated(exc)
                    continue
                # acquire/release, not ``async with``: one coroutine per message instead of three.
                self._handling = True
                await dispatch.acquire()
                try:
                    for action in actions:
                        if action.__class__ is Deliver:  # a client event: no _apply coroutine around it
                            await self._handle_in(action)
                        else:
                            await self._apply(action)
                    self._queue_output()
                finally:
                    dispatch.release()
                    self._handling = False
                self._answer()
                # Else the last action (a Leave: the channel, its handler, its join params) and
                # the frame's text would stay reachable from this frame until the client's next
                # message, maybe never.
                actions = action = data = ahead = None  # type: ignore[assignment]
                burst += 1
                if burst == FAIR_BURST:
                    burst = 0
                    await asyncio.sleep(0)  # let other clients' frames in (see FAIR_BURST)
        finally:
            transport.read_at_once(None)
            self._ahead = None
            try:
                if self._idle_key is not None:
                    self.server.deadlines.drop(self._idle_key, self)
                self._closing = True
                self._drop_pending()
                for leave in proto.close_all():
                    await self._leave(leave)
                if self._closed is not None:
                    # Returning would let websockets close with 1000 before our code goes out.
                    await asyncio.shield(self._closed)
            finally:
                self.server.connection_ended(self)  # run() is what ChannelServer.accept's caller awaits

    def take(self, data: str | bytes) -> bool:
        """Handle a client message as soon as it is read, without waking the reader task for it;
        False leaves it to the reader task (:meth:`run`), and the transport then sends every
        message after it that way too, so the order holds.

        The transport offers a message only while the reader task waits with nothing read ahead
        (:meth:`Transport.read_at_once <chanctl.server.transport.Transport.read_at_once>`), and
        only once the socket has joined a plain declarative topic: before that, a socket's messages
        are its joins (a connect pays nothing for this path), or a Python channel's events. It is
        handled here when nothing in its handling can suspend: a heartbeat, an answer the socket
        gives itself (an unmatched topic, a stale join_ref, a limit), or an event of a plain
        declarative topic, whose ``handle_in`` (and the ``terminate`` a crash would run) never
        awaits. Joins, leaves, token refreshes and Python channels' events go to the reader task,
        where a handler may await, and use what needs a current task (``asyncio.timeout``, a
        TaskGroup); such a message goes there decoded (it is the task's next one). A chat message
        handled here skips the reader's wake-up (a future, a loop turn, four coroutine frames):
        benchmarks/README.md, "Latency at low load".

        The frames it makes for this client wait for the end of the read (:meth:`read_ended`), as
        the reader's wait for the end of a message; others' go as :meth:`deliver` says. At most
        :data:`FAIR_BURST` messages of one read are taken; the rest go to the reader task, which
        yields between bursts.
        """
        if self._closing or self._handling or self._taken >= FAIR_BURST or self._dispatch.locked():
            return False
        try:
            msg = self.serializer.decode(data)
        except ProtocolViolation:
            return False  # the reader task decodes it again and closes the socket, as for any bad frame
        proto = self.proto
        channel = proto.channels.get(msg.topic)
        if not proto.settles(msg) or (channel is not None and channel.handler.__class__ is not DeclarativeChannel):
            self._ahead = (data, msg)
            return False
        self._taken += 1
        now = self._counted_in(data, asyncio.get_running_loop())
        try:
            actions = proto.receive_message(msg, now, len(data))
        except ProtocolViolation as exc:  # a flood past the rate limit
            self._violated(exc)
            return True
        self._handling = True
        try:
            for action in actions:  # client events only: proto.settles
                _to_the_end(self._handle_in(action))  # type: ignore[arg-type]
            self._queue_output()
        finally:
            self._handling = False
        return True

    def read_ended(self) -> None:
        """The read whose messages :meth:`take` handled is done: what they made for this client
        goes now in one write, unless messages of it wait for the reader task (their answers then
        go with those, at the end of the tick)."""
        if self._taken:
            self._taken = 0
            self._answer()

    def _counted_in(self, data: str | bytes, loop: asyncio.AbstractEventLoop) -> float:
        """A client message arrived: the idle deadline's clock and the counters; returns now.
        The read loop passes the loop it holds: ``get_running_loop`` per message was two thirds
        of this method's cost (~200 of ~290 ns over the inline code)."""
        self._last_seen = now = loop.time()
        stats = self.server.stats
        stats.messages_in += 1
        stats.bytes_in += len(data)
        return now

    def _answer(self) -> None:
        """After a client's message: if it has sent nothing more yet, what its message made for it
        (its own copy of a broadcast, the reply) goes now, in one write, not after the loop's turn."""
        if self._pending and not self.transport.has_more():
            self._write_pending()

    def _violated(self, exc: ProtocolViolation) -> None:
        """The client broke the protocol (a frame that cannot be decoded, a flood): say why, and close."""
        log.info("closing %s: %s", peer_address(self.transport.remote_address), shown(exc.reason))
        stats = self.server.stats
        stats.protocol_violations += 1
        if exc.limit is not None:
            stats.over_limit[exc.limit] += 1
        self._queue_output()
        # A close reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5).
        self.close(exc.code, exc.reason.encode()[:123].decode(errors="ignore"))

    async def _apply(self, action: Join | Leave | Refresh) -> None:
        """Every action but a client event (the read loop awaits ``_handle_in`` for those itself)."""
        if isinstance(action, Join):
            await self._join(action)
        elif isinstance(action, Refresh):
            self._refresh(action)
        else:
            await self._leave(action)

    def _refresh(self, refresh: Refresh) -> None:
        if self.session is None:
            outcome = error({"reason": "this socket has no token to refresh"})
        else:
            outcome = self.session.refresh(refresh.payload)
        self.proto.reply_refresh(refresh, outcome.status, outcome.response)

    async def _join(self, join: Join) -> None:
        factory = join.route.target
        handler: Channel = factory()
        context = handler.socket = ChannelContext(self, join)
        # In a cluster: until Redis confirms the topic's subscription (and this node has the
        # topic's presence), a client told it joined could miss what other nodes publish. Waited
        # for before the handler's join, so that nothing the join schedules (send_after(0, ...),
        # call_soon) runs before the channel exists.
        await self.server.pubsub.ready(join.topic)
        try:
            await self._join_ready(join, factory, handler, context)
        finally:
            self.server.pubsub.release(join.topic)

    async def _join_ready(self, join: Join, factory: Any, handler: Channel, context: ChannelContext) -> None:
        # A topic with both a join rule and a handler checks the rule first (CompiledTopic).
        gate = getattr(factory, "authorize_join", None)
        try:
            outcome = self._join_token(join.payload) if getattr(factory, "realtime", False) else None
            if outcome is None and gate is not None:
                outcome = gate(self.user, join.topic, join.route.captures, join.payload)
            if outcome is None:
                outcome = await handler.join(join.payload)
        except Exception:
            log.exception("join crashed on %s", shown(join.topic))
            self.server.stats.joins["crashed"] += 1
            self.proto.join_crashed(join)
            return
        self.server.stats.joins["ok" if outcome is None else outcome.status] += 1
        if outcome is None or outcome.status == "ok":
            response = None if outcome is None else outcome.response
            # From the read of the history to the subscription nothing awaits but the read itself,
            # and what the node hears meanwhile comes with the recovery: no broadcast can fall
            # between the ones a recovering joiner missed and the ones it gets live.
            history = self.server.history
            recovery = None if history is None else await history.recover(join.topic, join.payload)
            if recovery is not None and (response is None or isinstance(response, dict)):
                response = {**(response or {}), **recovery.reply()}
            try:
                channel = self.proto.join_succeeded(join, response, handler)
            except _UNENCODABLE:
                log.exception("join reply on %s cannot be encoded", shown(join.topic))
                self.proto.join_crashed(join)
                return
            context.channel = channel
            self.server.pubsub.subscribe(join.topic, self, channel, frozenset(handler.intercept))
            if handler.__class__ is DeclarativeChannel:
                # From now on this socket has messages take() may handle (see there); until then
                # none worth offering: a join, or a Python channel's event, is left to this task.
                self.transport.read_at_once(self)
            if recovery is not None:
                for event, payload in recovery.missed:  # after the reply, before anything new
                    self.proto.push(channel, event, payload)
            self._queue_output()  # the join reply goes before the presence frames (reply, diff, state)
            context.presence_key = self.server.presence.joined(self, channel, self.user, join.payload)
        else:
            self.proto.join_refused(join, outcome.response)

    def _join_token(self, payload: Any) -> Outcome | None:
        """realtime-js sends its current token in every join (``access_token``, after ``setAuth``):
        a token other than the socket's is checked as an ``access_token`` refresh, and a bad one
        refuses the join (with the refresh's reason), as Supabase refuses a join with a bad token."""
        token = payload.get(ACCESS_TOKEN) if isinstance(payload, dict) else None
        session = self.session
        if token is None or session is None or (isinstance(token, str) and token_key(token) == session.grant.key):
            return None
        outcome = session.refresh(payload)
        return outcome if outcome.status != "ok" else None

    async def _handle_in(self, action: Deliver) -> None:
        channel = action.channel
        handler: Channel = channel.handler
        context = handler.socket
        assert isinstance(context, ChannelContext)
        context.ref = action.ref
        server = self.server
        tap = server.pubsub.tap
        if tap is not None:
            tap.inbound(self, channel.topic, action.event, action.payload)
        started = time.perf_counter()
        try:
            outcome = await handler.handle_in(action.event, action.payload)
        except PresenceError as exc:  # already_tracked, nopresence, the update cap: say so, keep the channel
            outcome = error({"reason": exc.reason})
        except Exception:
            log.exception("channel crashed on %s handling %s", shown(channel.topic), shown(action.event))
            await self._crash(channel)
            return
        finally:
            context.ref = None
            server.stats.handler_latency.observe(time.perf_counter() - started)
        if outcome is not None:
            server.stats.replies[outcome.status] += 1
            try:
                self.proto.reply(channel, action.ref, outcome.status, outcome.response)
            except _UNENCODABLE:  # a reply the wire cannot carry is the handler's crash, not the socket's
                log.exception("reply on %s to %s cannot be encoded", shown(channel.topic), shown(action.event))
                await self._crash(channel)

    def queue_info(self, channel: ChannelState, message: Any) -> None:
        """Queue ``message`` for the channel's ``handle_info``, after the callback running now."""
        self.server.spawn(self._info(channel, message))

    async def _info(self, channel: ChannelState, message: Any) -> None:
        async with self._dispatch:
            if channel.closed:
                return
            try:
                await channel.handler.handle_info(message)
            except Exception:
                log.exception("channel crashed on %s handling info %s", shown(channel.topic), shown(repr(message)))
                await self._crash(channel)
            self._queue_output()

    def handle_out(self, channel: ChannelState, message: Broadcast) -> None:
        """An intercepted broadcast: the channel's ``handle_out`` decides what its client gets."""
        if channel.closed:
            return
        try:
            channel.handler.handle_out(message.event, message.payload)
        except Exception:
            log.exception("channel crashed on %s intercepting %s", shown(channel.topic), shown(message.event))
            self.server.spawn(self._end(channel, crashed=True))

    def fail(self, channel: ChannelState) -> None:
        """Stop the channel with ``phx_error`` (as if it crashed): phoenix.js rejoins it. The
        cluster uses it for topics that may have missed broadcasts while Redis was away."""
        if not channel.closed:
            self.server.spawn(self._end(channel, crashed=True))

    def stop(self, channel: ChannelState) -> None:
        """The handler asked to stop: phx_close once the callback running now is done."""
        self.server.spawn(self._end(channel, crashed=False))

    async def _end(self, channel: ChannelState, crashed: bool) -> None:
        # Under the dispatch lock, so the reply of the callback that asked comes first (§3.4).
        async with self._dispatch:
            leave = self.proto.crash(channel) if crashed else self.proto.stop(channel)
            if leave is not None:
                await self._leave(leave)
            self._queue_output()

    async def _crash(self, channel: ChannelState) -> None:
        leave = self.proto.crash(channel)
        if leave is not None:
            await self._leave(leave)

    async def _leave(self, leave: Leave) -> None:
        channel = leave.channel
        context = channel.handler.socket
        assert isinstance(context, ChannelContext)
        context.cancel_timers()
        self.server.pubsub.unsubscribe(channel.topic, self, channel)
        self.server.presence.left(channel)
        if leave.reason is LeaveReason.DUPLICATE_JOIN:
            return  # Phoenix kills the old channel without running terminate (§3.3).
        try:
            await channel.handler.terminate(leave.reason)
        except Exception:
            log.exception("terminate crashed on %s", shown(channel.topic))
