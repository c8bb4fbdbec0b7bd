"""Memory bound per connection, graceful shutdown, second Ctrl+C (DESIGN.md §4, issue 3 items 3-4)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from urllib.parse import urlsplit

import pytest
import websockets

from tests.support import PRESENCE_EVENTS, TIMEOUT, RawClient, flood_past_the_rate_limit

BOUND = 64 * 1024


async def test_slow_reader_is_closed_at_the_bound_and_fast_readers_lose_nothing(conformance_server, mint):
    async with conformance_server(outbound_buffer=BOUND) as server:
        # The slow client stops reading after its join: websockets stops draining the socket
        # once max_queue messages wait, so the server's buffer for it can only grow.
        slow = await RawClient.connect(server.url, mint(1), max_queue=1)
        fast = await RawClient.connect(server.url, mint(2))
        await slow.call(["1", "1", "room:lobby", "phx_join", {}])
        await fast.call(["1", "1", "room:lobby", "phx_join", {}])
        slow_conn = next(c for c in server.connections if c.user["id"] == 1)
        got: list[int] = []
        progress = asyncio.Condition()

        async def read_fast(total: int) -> None:
            while len(got) < total:
                got.append((await fast.recv())[4]["n"])
                async with progress:
                    progress.notify_all()

        body = "x" * 4096
        total = 4000  # 16 MB: far past the kernel's socket buffers and the bound
        window = 8  # the producer stays this close to the fast reader: 32 KiB in flight at most
        reader = asyncio.create_task(read_fast(total))
        peak = 0
        for n in range(total):
            server.pubsub.broadcast("room:lobby", "bulk", {"n": n, "body": body})
            await asyncio.sleep(0)  # one tick: the flusher writes
            if not slow_conn._closing:
                peak = max(peak, slow_conn.transport.unsent())
            async with progress:
                await asyncio.wait_for(progress.wait_for(lambda: len(got) > n - window), TIMEOUT)
        await asyncio.wait_for(reader, TIMEOUT)
        assert got == list(range(total))
        assert server.stats.slow_consumers == 1
        assert server.stats.over_limit == {"server.outbound_buffer": 1}  # in chanctl_limit_refusals_total
        assert peak <= BOUND
        await asyncio.wait_for(slow_conn.transport.ws.wait_closed(), TIMEOUT)  # aborted after its grace second
        assert slow_conn.transport.ws.protocol.close_sent.code == 1013
        assert slow_conn.transport.ws.protocol.close_sent.reason == "slow consumer"
        await fast.close()
        slow.ws.transport.abort()


async def test_sigterm_drains_with_1012_and_exits_0(serve_process, mint):
    served = serve_process()
    clients = [await RawClient.connect(served.url, mint(42), ignore=PRESENCE_EVENTS) for _ in range(3)]
    for c in clients:
        await c.call(["1", "1", "room:42", "phx_join", {}])
    served.proc.send_signal(signal.SIGTERM)
    for c in clients:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await c.recv(TIMEOUT)
        assert info.value.rcvd.code == 1012
    with pytest.raises(OSError):  # no longer accepting (refused, or already gone)
        await RawClient.connect(served.url, mint(42))
    assert await asyncio.to_thread(served.proc.wait, TIMEOUT) == 0


async def test_a_second_ctrl_c_forces_exit_while_draining(serve_process, mint):
    served = serve_process()
    # A client that finishes the handshake and never answers the close handshake, so the
    # graceful drain would wait out its whole bound. (Two signals sent back to back would merge
    # into one, so the second is sent once the first is seen to work.)
    host, port = served.url.split("//")[1].split("/")[0].split(":")
    stuck = socket.create_connection((host, int(port)))
    stuck.sendall(
        f"GET /socket/websocket?vsn=2.0.0&token={mint(42)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert stuck.recv(4096).startswith(b"HTTP/1.1 101")
    served.proc.send_signal(signal.SIGINT)
    stuck.settimeout(TIMEOUT)
    assert stuck.recv(2)[0] == 0x88  # the drain's close frame: the first Ctrl+C was handled
    served.proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(served.proc.wait, TIMEOUT) == 130
    stuck.close()


async def test_a_flooding_client_is_refused_then_closed_while_others_lose_nothing(conformance_server, mint):
    async with conformance_server(rate_limit="{per_second: 5, burst: 10}") as server:
        async with await RawClient.connect(server.url, mint(1)) as flood, await RawClient.connect(server.url, mint(2)) as calm:
            await calm.call(["1", "1", "room:lobby", "phx_join", {}])
            await flood.call(["1", "1", "room:lobby", "phx_join", {}])
            await flood_past_the_rate_limit(flood, calm, "room:lobby", "shout")
        assert server.stats.protocol.rate_limited == 21


async def test_connections_accepted_in_one_burst_share_their_attribute_names(server, mint):
    """CPython shares a class's attribute names among its instances only while the shared table
    has room, and every instance built before the first has set all its names takes some: a burst
    of connections (a reconnect storm) gave every connection a table of its own, 1.3 KiB more per
    idle connection. Sockets all waiting in the backlog are accepted in one loop turn: a burst."""
    port = urlsplit(server.url).port
    burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    clients = await asyncio.gather(*(RawClient.connect(server.url, mint(n), sock=sock) for n, sock in enumerate(burst)))
    for client in clients:
        await client.call(["1", "1", "room:lobby", "phx_join", {}])
    assert len(server.connections) == len(burst)
    for connection in server.connections:
        names = vars(connection.transport.ws)
        own_table = {}
        for name, value in names.items():
            own_table[name] = value
        assert sys.getsizeof(names) < sys.getsizeof(own_table), "the connection's attributes have a table of their own"
    for client in clients:
        await client.close()
