"""ChannelServer: the listener, the handshake, and the set of live connections.

The handshake authenticates (PROTOCOL.md §1): the Origin must be allowed, the vsn negotiable and
the token (``?token=`` or phoenix.js ``authToken`` in ``Sec-WebSocket-Protocol``) valid, or the
upgrade is refused with 403 before any WebSocket exists. Everything after the upgrade belongs to
:class:`~chanctl.server.connection.Connection`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderFormat
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from chanctl import __version__
from chanctl.config.load import LoadedConfig
from chanctl.config.model import default_node_name
from chanctl.errors import HandshakeRefused, ServerError, TokenError
from chanctl.presence.tracker import PresenceStats, PresenceTracker
from chanctl.protocol.router import Router
from chanctl.protocol.serializers import Serializer, negotiate
from chanctl.protocol.socket import Stats as ProtocolStats
from chanctl.pubsub.history import History, HistorySpec
from chanctl.pubsub.streams import StreamHistory
from chanctl.pubsub.local import LocalPubSub
from chanctl.pubsub.redis import RedisPubSub
from chanctl.server.admin import ADMIN_TOPIC, AdminChannel, AdminTap
from chanctl.server.compile import CompiledConfig, compile_config
from chanctl.server.cluster import Cluster, replica_id
from chanctl.server.connection import Connection, peer_address
from chanctl.server.deadlines import Deadlines
from chanctl.server.fairread import FairReadConnection
from chanctl.origins import OriginPolicy
from chanctl.server.longpoll import LongPollEndpoint
from chanctl.server import realtime
from chanctl.server.handshake import PHOENIX_PROTOCOL, REALTIME_TOKEN_PARAM, TokenRedactor, query_params, token_from_subprotocols
from chanctl.server.upgrade import read_upgrade, switching_protocols
from chanctl.server.memory import MemoryTrim, TrimStats
from chanctl.server.metrics import LatencyHistogram, render_metrics
from chanctl.server.sessions import Grant, Sessions, SessionStats
from chanctl.server.transport import Transport, WebSocketTransport
from chanctl.server.wire import Flusher
from chanctl.tokens import TokenSigner
from chanctl.escape import escape, shown

__all__ = ["ChannelServer", "ServerStats", "build_server"]

log = logging.getLogger("chanctl.server")


class _FrontDoor:
    """What the front door keeps of one connection until its first request is answered.

    One slot on the connection, replaced (never deleted) once the request is answered."""

    __slots__ = ("deadline", "head", "held", "paused", "refused", "sniffed", "tail")

    def __init__(self, deadline: int) -> None:
        self.deadline = deadline
        """The open timeout's key in the server's deadlines (see :meth:`_WebSocket.deadline_passed`)."""
        self.head = b""
        """The request line read so far (LongPoll sniff)."""
        self.sniffed = False
        self.tail = b""
        """The last 3 bytes passed on before the first request's head ended (its end may straddle reads)."""
        self.held: bytes | None = None
        """What came after the first request's head, until the handshake is answered."""
        self.paused = False
        """Whether reading is paused for what is held."""
        self.refused: HandshakeRefused | None = None
        """The fast path's refusal of the upgrade, for websockets to answer (see :meth:`_WebSocket._open`)."""


_SWITCHING_PROTOCOLS = HTTPStatus.SWITCHING_PROTOCOLS.value
_OPEN = State.OPEN
"""Read once: an enum member read through its class is a descriptor call each time (Python 3.11)."""

_PASSED = _FrontDoor(0)
"""The door of every connection whose first request was answered: its reads go to websockets."""

OPEN_TIMEOUT = 10.0
"""Seconds a client has from its TCP connect until its first request is answered (websockets'
``open_timeout`` default), met at most one deadline resolution (50 ms) late; then the connection is
dropped, as websockets drops it."""

_UPGRADED = Request("", Headers())
"""``request`` of every connection whose upgrade the front door answered: websockets reads the
first event as the request until one is set, and chanctl keeps nothing of it (see ``_handle``)."""


class _WebSocket(FairReadConnection):
    """A websockets connection that carries what the handshake verified, and the front door of
    the port (its reads of the open WebSocket are sliced by :class:`FairReadConnection`).

    A request for ``<path>/longpoll`` is handed to the LongPoll endpoint before websockets parses
    it (websockets answers only bodiless GETs, and LongPoll POSTs a body). The hand-off sniffs the
    request line, moves the asyncio transport to the LongPoll protocol with the bytes read so far,
    and ends this connection as one that closed before its request: websockets' handler then
    finishes without touching the transport (it is swapped for a detached one first).

    Bytes that follow the first request's head wait (with reading paused once there are any) until
    the handshake is answered: websockets would parse them as WebSocket frames at once, and a second pipelined HTTP
    request (``GET /healthz`` twice in one write) makes it fail the connection, then trip its own
    assertion when it answers the first (an unauthenticated traceback in the log, and the first
    answer lost). After a 101 they are handed to websockets as the client's first frames; after any
    other answer (websockets answers one request per connection) they are dropped and counted.

    A plain upgrade of the socket path read whole in one read is answered here, without
    websockets' handshake (:meth:`_open`, :mod:`chanctl.server.upgrade`): about a third of a
    connect's instructions. Anything else goes to websockets as before. The open timeout is the
    server's (:meth:`deadline_passed`), not websockets' ``asyncio.timeout`` per handshake.

    This leans on websockets' connection being the asyncio protocol, within the 17.x range
    pyproject.toml allows; tests/server/test_longpoll.py, test_hostile.py and test_upgrade.py
    cover it.
    """

    __slots__ = ("session", "_door", "drained")  # beside the instance __dict__, not in it: see __init__

    longpoll: LongPollEndpoint | None = None
    stats: ServerStats
    front: ChannelServer
    """The server this port belongs to (the per-server subclass made in ``_listen`` sets these three)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Every attribute a connection will have, set while it is the only one being built.

        CPython shares one table of attribute names among a class's instances (each keeps only its
        values, about 290 bytes here) only while that table has room, at most 30 names, and each
        instance created before the names are all in takes one of them. A burst of connections
        accepted at once (a reconnect storm, the idle benchmark's 200 at a time) makes those
        instances before the first one reaches ``connection_made``: the names websockets adds
        there and the ones chanctl added later no longer fit, and every connection gets a whole
        table of its own, 1,584 bytes (about 1.3 KiB RSS per idle connection,
        benchmarks/README.md). So chanctl's own are slots, and the two websockets sets in
        ``connection_made`` are set here first (to None: nothing reads them before it runs)."""
        super().__init__(*args, **kwargs)
        self.session: tuple[dict[str, Any], Serializer, Grant] | None = None
        """Claims, serializer and the token's grant."""
        self._door: _FrontDoor | None = None
        """The front door's state until the first request is answered, then :data:`_PASSED`."""
        self.drained: Callable[[], None] | None = None
        """Set by a :class:`~chanctl.server.transport.WebSocketTransport` holding frames back until
        asyncio's write buffer is empty: called then (see its docstring)."""
        self.recv_messages = self.transport = None  # type: ignore[assignment]

    def resume_writing(self) -> None:
        super().resume_writing()
        drained = self.drained
        if drained is not None:
            drained()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._door = _FrontDoor(self.front.deadlines.add(self.loop.time() + OPEN_TIMEOUT, self))

    def deadline_passed(self) -> None:
        """The open timeout passed: a connection whose first request is not answered yet is dropped,
        as websockets drops it (its own ``open_timeout`` is off: one timer per handshake)."""
        if self._door is not _PASSED:
            self.transport.abort()

    def _drop_open_timeout(self, door: _FrontDoor | None) -> None:
        """The first request was answered, or the connection is gone: ``door``'s open timeout goes."""
        if door is not None and door is not _PASSED:
            self.front.deadlines.drop(door.deadline, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop_open_timeout(self._door)
        super().connection_lost(exc)
        received = self.request_rcvd
        if received is not None and not received.done():
            received.set_result(None)  # the handshake waits on it alone (see handshake)

    def data_received(self, data: bytes) -> None:
        door = self._door
        if door is _PASSED:
            super().data_received(data)
            return
        assert door is not None  # set in connection_made
        if door.held is not None:
            door.held += data  # read after the head, before the answer: held, and no more read
            self._pause(door)
        elif door.sniffed or self.longpoll is None:
            self._first_request(door, data)
        else:
            self._sniff(door, data)

    def _sniff(self, door: _FrontDoor, data: bytes) -> None:
        assert self.longpoll is not None
        head = door.head + data
        line_end = head.find(b"\r\n")
        if line_end < 0 and len(head) < _REQUEST_LINE_LIMIT:
            door.head = head
            return
        door.sniffed, door.head = True, b""
        parts = head[: line_end if line_end >= 0 else len(head)].split(b" ")
        target = parts[1] if len(parts) == 3 else b""
        if target.split(b"?", 1)[0].decode("latin-1") == self.longpoll.path:
            self._hand_off(head)
        else:
            self._first_request(door, head)

    def _first_request(self, door: _FrontDoor, data: bytes) -> None:
        """Pass websockets the first request up to the end of its head; hold what follows."""
        scan = door.tail + data
        end = scan.find(b"\r\n\r\n")
        if end < 0:
            door.tail = scan[-3:]
            super().data_received(data)
            return
        cut = end + 4 - len(door.tail)
        if not door.tail and self._open(door, data[:cut]):  # the whole head in this read, answered here
            self._pass_through(data[cut:])
            return
        door.held = data[cut:]
        if door.held:
            self._pause(door)
        # Else reading goes on: a client normally waits for the answer before it sends more, and
        # pausing and resuming costs two epoll_ctl calls per connection (issue 15, connect CPU).
        super().data_received(data[:cut])
        if self.protocol.eof_sent:  # not a request websockets could parse: it is closing already
            self._pass_through(b"")

    def _open(self, door: _FrontDoor, head: bytes) -> bool:
        """The fast path: a plain upgrade of the socket path, admitted, is answered here with the
        bytes websockets would write, and websockets' protocol set OPEN as its handshake leaves it
        (a frame parser, ``request`` set, ``request_rcvd`` done). False: websockets reads the head
        (anything :func:`~chanctl.server.upgrade.read_upgrade` does not take, debug logging on,
        the server closing) and answers it, a refusal found here included (``door.refused``)."""
        front, protocol = self.front, self.protocol
        if front.fast_path is None or self.debug or not self.server.is_serving():
            return False  # websockets logs every header at debug level, and answers 503 while closing
        upgrade = read_upgrade(head, front.fast_path)
        if upgrade is None:
            return False
        try:
            self.session = front.admit_upgrade(self.remote_address, upgrade.query, upgrade.protocol_values, upgrade.origin)
        except HandshakeRefused as exc:
            door.refused = exc
            return False
        except Exception:  # a bug: on websockets' path it is logged and answered 500, as before
            return False
        subprotocol = _select_subprotocol(self, upgrade.protocols)
        self.transport.write(switching_protocols(upgrade.key, subprotocol, front.server_header))
        protocol.subprotocol, protocol.origin = subprotocol, upgrade.origin  # type: ignore[assignment]
        protocol.state = _OPEN
        protocol.parser = protocol.parse()  # OPEN: a frame parser (the one made at connect waits for a request)
        next(protocol.parser)
        self.request = _UPGRADED
        self.request_rcvd.set_result(None)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("connection open")  # as websockets logs it
        return True

    def refused(self) -> HandshakeRefused | None:
        """The fast path's refusal of this connection's upgrade, for ``_process_request`` to answer."""
        door = self._door
        return None if door is None else door.refused

    def _pause(self, door: _FrontDoor) -> None:
        """Hold what came after the head: read no more until the answer (one read's bytes at most)."""
        if not door.paused:
            door.paused = True
            self.transport.pause_reading()

    def answering(self, response: Response) -> None:
        """Called with the answer about to be sent (websockets' ``process_response``): what came
        after a request that gets no upgrade is dropped here, before the client can see the end."""
        held = self._held()
        if response.status_code == _SWITCHING_PROTOCOLS or held is None:
            return
        if held:
            self.stats.pipelined_dropped += 1
            log.debug("dropped %d bytes from %s sent after a request answered %d, without an upgrade",
                      len(held), peer_address(self.remote_address), response.status_code)
        # From here websockets discards what comes until the client closes; it must see that close.
        self._pass_through(b"")

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        # One future awaited until the first request is in (or the connection is lost: see
        # connection_lost), not websockets' asyncio.wait over two; then websockets' handshake
        # only if the front door did not answer the request itself.
        try:
            await self.request_rcvd
        except asyncio.CancelledError:
            # Awaiting a future cancels it with the task; websockets would still set it on a request.
            self.request_rcvd = self.loop.create_future()
            raise
        if self.protocol.state is _OPEN:
            return  # answered by _open
        try:
            await super().handshake(*args, **kwargs)
        finally:
            held = self._held()
            if held is not None:
                self._pass_through(held if self.protocol.state is _OPEN else b"")

    def _held(self) -> bytes | None:
        """What waits behind the first request, or None when nothing is held (yet, or any more)."""
        door = self._door
        return None if door is None else door.held

    def _pass_through(self, held: bytes) -> None:
        """The first request is answered: read on, and hand websockets everything from ``held`` on."""
        door, self._door = self._door, _PASSED  # the door's state goes with it: nothing more kept per connection
        self._drop_open_timeout(door)
        if door is not None and door.paused:
            # Resumed first: websockets may pause reading again for what the held frames queue.
            self.transport.resume_reading()
        if held:
            super().data_received(held)  # frames the client sent right behind its upgrade

    def _hand_off(self, head: bytes) -> None:
        assert self.longpoll is not None
        transport = self.transport
        http = self.longpoll.protocol()
        transport.set_protocol(http)
        http.connection_made(transport)
        http.data_received(head)
        self.transport = _Detached()  # type: ignore[assignment]
        self.connection_lost(None)


def _answering(ws: _WebSocket, request: Request, response: Response) -> None:
    ws.answering(response)


class _Detached:
    """The transport a handed-off websockets connection is left with: closing it is a no-op."""

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return True


_REQUEST_LINE_LIMIT = 8192
"""Bytes sniffed for a request line before the front door lets websockets answer."""


def _select_subprotocol(ws: ServerConnection, offered: list[Subprotocol]) -> Subprotocol | None:
    # phoenix.js offers ["phoenix", "base64url.bearer.phx.<token>"] and browsers fail the
    # handshake unless one offered protocol is echoed; clients that offer none get none.
    return Subprotocol(PHOENIX_PROTOCOL) if PHOENIX_PROTOCOL in offered else None


_REDACTOR = TokenRedactor()
SHUTDOWN_BATCH = 1000
"""Connections closed per loop iteration while draining, so a big drain never stalls the loop."""


@dataclass
class ServerStats:
    """Every counter of this node, in one place: /metrics and the admin plane read them here.

    The runtime's own are plain ints; the parts that count elsewhere (each socket's protocol, the
    presence tracker, the sessions) count into the objects held below. Broadcasts are counted by the
    pubsub (``pubsub.broadcasts``), so that a multi-node adapter counts its own.
    """

    connections: int = 0
    refused: int = 0
    slow_consumers: int = 0
    protocol_violations: int = 0
    disconnected: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    """Frames written to clients."""
    bytes_out: int = 0
    """Bytes written to clients, WebSocket framing included."""
    joins: Counter[str] = field(default_factory=Counter)
    """Join attempts by outcome: ok, error, crashed."""
    replies: Counter[str] = field(default_factory=Counter)
    """Handler replies by status."""
    closes: Counter[int | None] = field(default_factory=Counter)
    """Ended connections by close code (None: no close frame)."""
    over_limit: Counter[str] = field(default_factory=Counter)
    """Connections closed by a limit (connections, frame size, outbound buffer, ref size), by the
    limit's name as the close reason or the config says it."""
    pipelined_dropped: int = 0
    """HTTP connections whose client sent more after a request answered without an upgrade
    (a pipelined second request): dropped, as websockets answers one request per connection."""
    handler_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Seconds spent in ``handle_in``."""
    protocol: ProtocolStats = field(default_factory=ProtocolStats)
    """Stale join_refs dropped, unmatched topics and rate-limited messages, over every socket."""
    presence: PresenceStats = field(default_factory=PresenceStats)
    """The presence tracker's: diffs, states, counts, rate-limited updates."""
    sessions: SessionStats = field(default_factory=SessionStats)
    """Token refreshes, expiry warnings, expiries, revocations."""
    memory: TrimStats = field(default_factory=TrimStats)
    """Free heap pages given back after closes (chanctl.server.memory)."""


class ChannelServer:
    """A running chanctl server; use ``async with build_server(cfg) as server``.

    Args:
        loaded: the compiled config (a loaded one is compiled here).
        host, port: override ``server.host`` / ``server.port`` (port 0 picks a free one).

    Raises:
        ConfigError: ``loaded`` does not compile.
    """

    def __init__(self, loaded: CompiledConfig | LoadedConfig, *, host: str | None = None, port: int | None = None,
                 reuse_port: bool = False):
        compiled = loaded if isinstance(loaded, CompiledConfig) else compile_config(loaded)
        self.compiled = compiled
        self.loaded = compiled.loaded
        self.config = compiled.config
        self.host = host if host is not None else self.config.server.host
        self.port = port if port is not None else self.config.server.port
        self.reuse_port = reuse_port
        """Listen with ``SO_REUSEPORT`` (``serve --workers``: several processes share the port)."""
        self.router: Router[Any] = compiled.router()
        auth = self.config.auth
        self.admin_tap = AdminTap(self)
        self.router.add(ADMIN_TOPIC, lambda: AdminChannel(self.admin_tap, auth.admin_claim))
        self.signer = TokenSigner(auth.secret, salt=auth.salt, max_age=auth.max_age)
        self.deadlines = Deadlines()
        """Every socket's idle and token deadlines, on a few loop timers (chanctl.server.deadlines)."""
        self.sessions = Sessions(self.signer, warning=auth.expiry_warning, grace=auth.expiry_grace, max_age=auth.max_age,
                                 deadlines=self.deadlines)
        """Every socket's token: expiry, refresh, revocation (chanctl.server.sessions)."""
        cluster = self.config.cluster
        self.node = default_node_name() if cluster is None else cluster.node_name
        """This node's name (``cluster.node``, else ``host-pid``): in the admin plane and ``/metrics``."""
        self.pubsub: LocalPubSub
        self.cluster: Cluster | None = None
        """Set when the config has ``cluster:``: the nodes sharing its Redis act as one server."""
        if cluster is None:
            self.pubsub = LocalPubSub()
            self.presence = PresenceTracker(self.pubsub, compiled.presence, compiled.manual_presence, self.config.data)
        else:
            replica = replica_id(self.node)
            self.pubsub = RedisPubSub(cluster.redis, replica, prefix=cluster.prefix, max_pending=cluster.max_pending)
            self.presence = PresenceTracker(self.pubsub, compiled.presence, compiled.manual_presence, self.config.data, node=replica)
            self.cluster = Cluster(self, cluster, self.pubsub, self.presence)
        self.history: History | StreamHistory | None = None
        """Broadcast history of the topics with ``history:`` (None when none has it): in memory on
        one node, in Redis on a cluster (a node hears a topic only while it has subscribers)."""
        if any(topic.history is not None for topic in self.config.topics.values()):
            if isinstance(self.pubsub, RedisPubSub):
                self.history = self.pubsub.streams = StreamHistory(self.pubsub, self._history_spec)
            else:
                self.history = self.pubsub.history = History(self._history_spec)
        self.stats = ServerStats(presence=self.presence.stats, sessions=self.sessions.stats)
        self.connections: set[Connection] = set()
        self.memory_trim = MemoryTrim(self.config.server.memory_trim, self.stats.memory)
        """Gives freed memory back to the system after closes (chanctl.server.memory)."""
        self.flusher = Flusher()
        self.origins = OriginPolicy(self.config.server.origins) if self.config.server.origins else None
        self._realtime = self.config.realtime
        """A topic serves Supabase's clients (``?apikey=``, their serializer): read once, not per connect."""
        self._by_socket_id: dict[str, set[Connection]] = {}
        self._by_user: Counter[str] = Counter()
        """Open connections by ``user.id``, for ``server.max_connections_per_user``."""
        self._by_address: Counter[str] = Counter()
        """Open connections by remote IP, for ``server.max_connections_per_address``."""
        self.started_at = time.time()
        self._server: Server | None = None
        self._stopped = False
        self._ended = asyncio.Event()
        """Set, then replaced, each time a connection's handler finishes (see :meth:`until_connections`)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws_path = self.config.server.path.rstrip("/") + "/websocket"
        self.fast_path: bytes | None = _fast_path(self._ws_path)
        """The socket path as the front door's fast path compares it (None: websockets reads every upgrade)."""
        self.server_header = f"chanctl/{__version__}"
        """The Server header of every answer."""
        longpoll = self.config.server.longpoll
        self.longpoll = LongPollEndpoint(
            self.config.server.path.rstrip("/") + "/longpoll", self.admit, self.accept, self.spawn,
            window=longpoll.window, max_body=longpoll.max_body, max_frame_size=self.config.server.max_frame_size,
        ) if longpoll.enabled else None
        """Phoenix's LongPoll transport, when ``server.longpoll.enabled``."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen.

        Raises:
            ServerError: the address cannot be bound (in use, not ours, bad host).
        """
        try:
            self._server = await self._listen()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ServerError(f"cannot listen on {self.host}:{self.port}: {reason}") from None
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self.started_at = time.time()
        if self.cluster is not None:
            await self.cluster.start()

    async def _listen(self) -> Server:
        # websockets logs each request line and header at debug level: redact tokens at every level.
        logging.getLogger("websockets.server").addFilter(_REDACTOR)  # the same filter is added once
        return await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=_answering,
            create_connection=type("_WebSocket", (_WebSocket,), {"longpoll": self.longpoll, "stats": self.stats, "front": self}),
            select_subprotocol=_select_subprotocol,
            max_size=self.config.server.max_frame_size,
            compression=None,
            ping_interval=None,  # Phoenix liveness is the client's heartbeat plus our idle timeout.
            open_timeout=None,  # the front door's, on the server's deadlines (_WebSocket.deadline_passed)
            server_header=self.server_header,
            reuse_port=self.reuse_port or None,
        )

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"ws://{host}:{self.port}{self._ws_path}"

    async def __aenter__(self) -> "ChannelServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection with 1012 (Service Restart) in batches, wait
        at most ``timeout`` seconds for them to go, then drop the rest and stop the server's
        timers and background tasks. Also for a server that never listened (the test harness's)."""
        if self._stopped:
            return
        self._stopped = True
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=False)
        if self.cluster is not None:
            await self.cluster.leave()  # before the drain: this node's presences leave everywhere at once
        remaining = list(self.connections)
        log.info("draining %d connections", len(remaining))
        for start in range(0, len(remaining), SHUTDOWN_BATCH):
            for connection in remaining[start : start + SHUTDOWN_BATCH]:
                connection.close(1012, "server restarting")
            await asyncio.sleep(0)  # let the batch's close frames go out before the next
        try:
            if server is not None:
                await asyncio.wait_for(server.wait_closed(), timeout)
            else:
                await asyncio.wait_for(self.until_connections(0), timeout)
        except TimeoutError:
            log.warning("shutdown timed out after %gs; dropping the remaining connections", timeout)
        if self.longpoll is not None:
            self.longpoll.close()
        for task in list(self._tasks):
            task.cancel()
        self.presence.close()
        self.memory_trim.close()
        if self.cluster is not None:
            await self.cluster.close()

    async def until_connections(self, count: int) -> None:
        """Return once at most ``count`` connections are open. A closed socket counts until its
        handler has finished: its channels left, its close code counted, its line logged. The
        shutdown's drain waits here, and so does whatever acts on those after a close (tests)."""
        while len(self.connections) > count:
            await self._ended.wait()

    def _history_spec(self, topic: str) -> HistorySpec | None:
        route = self.router.match(topic)
        return None if route is None else getattr(route.target, "history", None)

    def disconnect(self, socket_id: str, *, everywhere: bool = True) -> int:
        """Close every connection whose socket id is ``socket_id`` with 1001 (PROTOCOL.md §4), on
        every node of the cluster unless ``everywhere`` is false (Phoenix broadcasts "disconnect"
        on the socket id's topic, which reaches every node too).

        No frame is sent before the close; phoenix.js reconnects, which re-runs authentication.
        Returns how many connections were closed on this node.
        """
        if everywhere and self.cluster is not None:
            self.cluster.publish_disconnect(socket_id)
        targets = list(self._by_socket_id.get(socket_id, ()))
        for connection in targets:
            connection.close(1001, "disconnected by the server")
        self.stats.disconnected += len(targets)
        return len(targets)

    def revoke(self, entry: dict[str, Any]) -> int:
        """Apply a revocation entry (see :class:`~chanctl.server.sessions.Revocations`) and close
        this node's sockets it names with 4403; returns how many. Listeners of
        ``sessions.on_revoke`` hear about it (a cluster publishes it to the other nodes)."""
        closed = self.sessions.apply(entry, [c.session for c in self.connections if c.session is not None])
        for listener in self.sessions.on_revoke:
            listener(entry)
        return closed

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def publish(self, topic: str, event: str, payload: Any) -> int:
        """Broadcast ``event`` on ``topic`` from outside the topic (another topic's ``push_to``, the
        admin plane, a test; Phoenix's ``Endpoint.broadcast``); returns this node's recipients. On a
        ``realtime: true`` topic it goes out in Supabase's envelope, as the topic's own broadcasts do."""
        route = self.router.match(topic)
        if route is not None and getattr(route.target, "realtime", False):
            event, payload = realtime.outbound(event, payload)
        return self.pubsub.broadcast(topic, event, payload)

    def send_info(self, topic: str, message: Any) -> int:
        """Deliver ``message`` to ``handle_info`` of every channel joined to ``topic`` on this node."""
        subscriptions = self.pubsub.subscriptions(topic)
        for connection, channel in subscriptions:
            connection.queue_info(channel, message)
        return len(subscriptions)

    # -- handshake ---------------------------------------------------------------------------

    def _process_request(self, ws: _WebSocket, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if request.method != "GET":  # a WebSocket upgrade is always a GET (RFC 6455 §4.1)
            response = ws.respond(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed; use GET\n")
            response.headers["Allow"] = "GET"
            return response
        if url.path == "/healthz":
            return _json(HTTPStatus.OK, self.health())
        if url.path == "/metrics":
            body, content_type = render_metrics(self)
            return _body(HTTPStatus.OK, body, content_type)
        if url.path != self._ws_path:
            return ws.respond(HTTPStatus.NOT_FOUND, f"not found; the socket is at {self._ws_path}\n")
        refused = ws.refused()  # the front door's fast path judged it already (and counted, logged it)
        if refused is None:
            # The Origin header only when an origin policy reads it (a missing header costs websockets a KeyError).
            origin = request.headers.get("Origin") if self.origins is not None else None
            try:
                ws.session = self.admit_upgrade(ws.remote_address, url.query, request.headers.get_all("Sec-WebSocket-Protocol"), origin)
            except HandshakeRefused as exc:
                refused = exc
        if refused is not None:
            return ws.respond(HTTPStatus.FORBIDDEN, refused.reason + "\n")
        return None

    def admit_upgrade(self, remote: Any, query: str, protocol_values: list[str],
                      origin: str | None) -> tuple[dict[str, Any], Serializer, Grant]:
        """:meth:`admit` for a WebSocket upgrade: the token from ``?token=`` (realtime-js:
        ``?apikey=``) or phoenix.js's ``authToken`` subprotocol, the vsn from ``?vsn=``.

        Raises:
            HandshakeRefused: why not (counted and logged).
        """
        params = query_params(query)
        token = params.get("token")
        if token is None and self._realtime:
            token = params.get(REALTIME_TOKEN_PARAM)  # realtime-js: ?apikey=<token>
        if token is None:
            try:
                token = token_from_subprotocols([p for value in protocol_values for p in parse_subprotocol(value)])
            except InvalidHeaderFormat as exc:  # was a traceback in the log and a 500
                refused = HandshakeRefused(f"no token: {exc}")
                self._refused(remote, refused)
                raise refused from None
        return self.admit(remote, origin, params.get("vsn"), token)

    def admit(self, remote: Any, origin: str | None, vsn: str | None, token: str | None) -> tuple[dict[str, Any], Serializer, Grant]:
        """Authenticate a client at connect, whatever its transport (PROTOCOL.md §1): the origin
        allowed, the vsn negotiable, the token valid and not revoked. Returns the claims, the
        serializer and the token's grant (its expiry, for the session).

        Raises:
            HandshakeRefused: why not; counted and logged here.
        """
        try:
            if self.origins is not None and not self.origins.allows(origin):
                raise HandshakeRefused(f"origin {origin!r} is not allowed")
            serializer = negotiate(vsn, realtime=self._realtime, max_ref_bytes=self.config.server.max_ref_bytes)
            if serializer is None:
                raise HandshakeRefused(f"unsupported vsn {vsn!r}; this server speaks 1.0.x and 2.0.x")
            try:
                verified = self.signer.verify(token)
            except TokenError as exc:
                raise HandshakeRefused(str(exc)) from None
            assert token is not None  # verify refuses a missing token
            grant = self.sessions.admit(token, verified)
            if grant is None:
                raise HandshakeRefused("token revoked")
            return verified.claims, serializer, grant
        except HandshakeRefused as exc:
            self._refused(remote, exc)
            raise

    def _refused(self, remote: Any, exc: HandshakeRefused) -> None:
        """Count and log a refused client."""
        self.stats.refused += 1
        log.info("connection refused: from %s: %s", peer_address(remote), shown(exc.reason))

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: answered while the server accepts connections; ``degraded`` (still
        200: this node serves its own clients) while its cluster's Redis is unreachable."""
        cluster = {} if self.cluster is None else self.cluster.health()
        return {
            "status": "degraded" if cluster.get("redis") == "unreachable" else "ok",
            "node": self.node,
            **cluster,
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
            "connections": len(self.connections),
            "topics": len(self.pubsub.topics()),
        }

    def _socket_id(self, claims: dict[str, Any]) -> str | None:
        """``auth.socket_id`` filled from the token's claims; None (anonymous) when one is missing."""
        try:
            return self.config.auth.socket_id.format_map(claims)
        except (KeyError, IndexError, AttributeError, ValueError):
            return None

    def _over_limit(self, user_key: str, address: str) -> str | None:
        """The close reason when a new connection would pass a connection limit, else None."""
        limits = self.config.server
        if limits.max_connections is None and limits.max_connections_per_user is None and limits.max_connections_per_address is None:
            return None  # no limit set: nothing to count against
        for setting, limit, count, whose in (
            ("max_connections", limits.max_connections, len(self.connections), "in all"),
            ("max_connections_per_user", limits.max_connections_per_user, self._by_user[user_key], "for this user"),
            ("max_connections_per_address", limits.max_connections_per_address, self._by_address[address], "from this address"),
        ):
            if limit is not None and count >= limit:
                self.stats.over_limit[f"server.{setting}"] += 1
                return f"too many connections {whose} (server.{setting}: {limit})"
        return None

    def _handle(self, ws: _WebSocket) -> Coroutine[Any, Any, None]:
        # Not a coroutine itself: websockets awaits accept's directly, one frame fewer held per
        # connection. The handshake's request and response (headers and all, about 3 KiB, the
        # token in the path) are not needed past it, and websockets would keep them for the
        # connection's life. The request is emptied in place: websockets' parser keeps it too, and
        # ``ws.request`` being set is how websockets knows the handshake is done. websockets reads
        # its done ``request_rcvd`` future only during the handshake (about 140 bytes).
        assert ws.session is not None and ws.request is not None
        user, serializer, grant = ws.session
        ws.session = ws.response = ws.request_rcvd = None  # type: ignore[assignment]
        request = ws.request
        if request is not _UPGRADED:  # read by websockets
            request.headers.clear()
            request.path = ""
        return self.accept(WebSocketTransport(ws), user, serializer, grant)

    def accept(self, transport: Transport, claims: dict[str, Any], serializer: Serializer,
               grant: Grant | None = None) -> Coroutine[Any, Any, None]:
        """Serve one client over ``transport`` until it closes: the way in for every transport.
        Returns the coroutine that serves it; await it.

        The caller has done the handshake: ``claims`` are the verified token's (they become the
        channels' ``user``), ``serializer`` is the negotiated vsn's, and ``grant`` says when the
        token expires (the socket is held to it; None: never, e.g. an in-process test socket).
        The WebSocket listener calls this for each upgrade; :mod:`chanctl.testing` calls it with
        an in-memory transport.
        """
        user = claims
        user_key, address = str(user.get("id")), _address(transport)
        reason = self._over_limit(user_key, address)
        if reason is not None:
            # Closed before it costs a connection; the client sees which setting refused it.
            log.info("closing a new connection of user %s from %s: %s", shown(user_key), address, reason)
            return transport.close(1013, reason)
        socket_id = self._socket_id(user)
        connection = Connection(self, transport, user, serializer, socket_id)
        self.connections.add(connection)
        self._by_user[user_key] += 1
        self._by_address[address] += 1
        if socket_id is not None:
            self._by_socket_id.setdefault(socket_id, set()).add(connection)
        self.stats.connections += 1
        connection.session = None if grant is None else self.sessions.open(connection, grant)
        # Two lines per connection, as websockets' own "connection open"/"closed" were (serve
        # silences those at INFO); built only when INFO is on.
        if log.isEnabledFor(logging.INFO):
            log.info("connection open: %s (socket %s)", _who(connection), shown(socket_id) if socket_id is not None else "anonymous")
        # What the caller awaits is the connection's own loop, which ends in connection_ended: no
        # frame of this method stays held for the connection's life (an idle server holds one
        # per client; benchmarks/README.md, idle RSS).
        return connection.run()

    def connection_ended(self, connection: Connection) -> None:
        """The end of :meth:`accept`'s connection, called by it last: its channels have left."""
        if connection.session is not None:
            connection.session.end()
        self.connections.discard(connection)
        _decrement(self._by_user, str(connection.user.get("id")))
        _decrement(self._by_address, _address(connection.transport))
        self.memory_trim.connection_closed()
        # Waiters wake at the next await, after this method has counted and logged the close.
        ended, self._ended = self._ended, asyncio.Event()
        ended.set()
        code, reason, by = connection.ending()
        self.stats.closes[code] += 1
        if code == 1009 and by == "server":  # websockets (or LongPoll) refused a frame over max_frame_size
            self.stats.over_limit["server.max_frame_size"] += 1
        if log.isEnabledFor(logging.INFO):
            log.info("connection closed: %s after %.1fs: %s%s (%s)", _who(connection), time.time() - connection.connected_at, code,
                     f" '{escape(reason)}'" if reason else "", "dropped, no close frame" if by == "dropped" else f"closed by the {by}")
        socket_id = connection.socket_id
        same_id = self._by_socket_id.get(socket_id) if socket_id is not None else None
        if same_id is not None:
            same_id.discard(connection)
            if not same_id:
                del self._by_socket_id[socket_id]


def _fast_path(ws_path: str) -> bytes | None:
    """``ws_path`` as the fast path compares a request's target with it, or None when that could
    differ from websockets' reading (urlsplit): a path of visible ASCII not starting with ``//``."""
    if ws_path.startswith("//") or not ws_path.isascii() or not ws_path.isprintable() or " " in ws_path:
        return None
    return ws_path.encode("ascii")


def _who(connection: Connection) -> str:
    """Who a connection is, for its log lines (client strings escaped)."""
    return f"user {shown(connection.user.get('id'))} from {peer_address(connection.transport.remote_address)}"


def _address(transport: Transport) -> str:
    """The remote IP (without the port): what ``server.max_connections_per_address`` counts."""
    remote = transport.remote_address
    return str(remote[0]) if isinstance(remote, tuple) and remote else str(remote)


def _decrement(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # no key of a gone user or address stays behind


def _json(status: HTTPStatus, body: Any) -> Response:
    return _body(status, orjson.dumps(body) + b"\n", "application/json")


def _body(status: HTTPStatus, data: bytes, content_type: str) -> Response:
    # websockets closes the connection after any answer but a 101: say so, as its own answers do.
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data))), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, data)


def build_server(loaded: CompiledConfig | LoadedConfig, *, host: str | None = None, port: int | None = None,
                 reuse_port: bool = False) -> ChannelServer:
    """The one factory of servers, shared by the CLI, the tests and the benchmarks.

    Raises:
        ConfigError: a loaded config that does not compile (give a compiled one to skip the step).
    """
    return ChannelServer(loaded, host=host, port=port, reuse_port=reuse_port)
