"""ChannelServer: the listener, the handshake, and the set of live connections.

The handshake authenticates (PROTOCOL.md §1): the vsn must be negotiable and the token valid, or
the upgrade is refused with 403 before any WebSocket exists. Everything after the upgrade belongs
to :class:`~chanctl.server.connection.Connection`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chanctl import __version__
from chanctl.config.load import LoadedConfig
from chanctl.errors import ServerError, TokenError
from chanctl.protocol.router import Router
from chanctl.protocol.serializers import Serializer, negotiate
from chanctl.pubsub.local import LocalPubSub
from chanctl.server.behaviours import build_router
from chanctl.server.connection import Connection
from chanctl.tokens import TokenSigner

__all__ = ["ChannelServer", "ServerStats", "build_server"]

log = logging.getLogger("chanctl.server")


class _WebSocket(ServerConnection):
    """A websockets connection that carries what the handshake verified."""

    session: tuple[dict[str, Any], Serializer] | None = None


@dataclass
class ServerStats:
    connections: int = 0
    refused: int = 0
    slow_consumers: int = 0
    protocol_violations: int = 0


class ChannelServer:
    """A running chanctl server; use ``async with build_server(cfg) as server``.

    Args:
        loaded: the validated config.
        host, port: override ``server.host`` / ``server.port`` (port 0 picks a free one).
    """

    def __init__(self, loaded: LoadedConfig, *, host: str | None = None, port: int | None = None):
        self.loaded = loaded
        self.config = loaded.config
        self.host = host if host is not None else self.config.server.host
        self.port = port if port is not None else self.config.server.port
        self.router: Router[Any] = build_router(loaded)
        auth = self.config.auth
        self.signer = TokenSigner(auth.secret, salt=auth.salt, max_age=auth.max_age)
        self.pubsub = LocalPubSub()
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self.started_at = time.time()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws_path = self.config.server.path.rstrip("/") + "/websocket"

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

    async def _listen(self) -> Server:
        return await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            create_connection=_WebSocket,
            max_size=self.config.server.max_frame_size,
            compression=None,
            ping_interval=None,  # Phoenix liveness is the client's heartbeat plus our idle timeout.
            server_header=f"chanctl/{__version__}",
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
        """Stop accepting, close every connection with 1012 (Service Restart), wait with a bound."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        for connection in list(self.connections):
            connection.close(1012, "server shutting down")
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout)
        except TimeoutError:
            log.warning("shutdown timed out after %.0fs; dropping the remaining connections", timeout)
        for task in list(self._tasks):
            task.cancel()
        self._server = None

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_info(self, topic: str, message: Any) -> int:
        """Deliver ``message`` to ``handle_info`` of every channel joined to ``topic`` on this node."""
        subscriptions = self.pubsub.subscriptions(topic)
        for connection, channel in subscriptions:
            connection.send_info(channel, message)
        return len(subscriptions)

    # -- handshake ---------------------------------------------------------------------------

    def _process_request(self, ws: _WebSocket, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return _json(HTTPStatus.OK, self.health())
        if url.path != self._ws_path:
            return ws.respond(HTTPStatus.NOT_FOUND, f"not found; the socket is at {self._ws_path}\n")
        query = parse_qs(url.query)
        vsn = query.get("vsn", [None])[-1]
        serializer = negotiate(vsn)
        if serializer is None:
            return self._refuse(ws, f"unsupported vsn {vsn!r}; this server speaks 1.0.x and 2.0.x")
        token = query.get("token", [None])[-1]
        try:
            verified = self.signer.verify(token)
        except TokenError as exc:
            return self._refuse(ws, str(exc))
        ws.session = (verified.claims, serializer)
        return None

    def _refuse(self, ws: _WebSocket, reason: str) -> Response:
        self.stats.refused += 1
        log.info("refused %s: %s", ws.remote_address, reason)
        return ws.respond(HTTPStatus.FORBIDDEN, reason + "\n")

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "uptime": round(time.time() - self.started_at, 3), "connections": len(self.connections)}

    async def _handle(self, ws: _WebSocket) -> None:
        assert ws.session is not None
        user, serializer = ws.session
        connection = Connection(self, ws, user, serializer)
        self.connections.add(connection)
        self.stats.connections += 1
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)


def _json(status: HTTPStatus, body: Any) -> Response:
    data = orjson.dumps(body) + b"\n"
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)


def build_server(loaded: LoadedConfig, *, host: str | None = None, port: int | None = None) -> ChannelServer:
    """The one factory of servers, shared by the CLI, the tests and the benchmarks."""
    return ChannelServer(loaded, host=host, port=port)
