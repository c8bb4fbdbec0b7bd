"""Large writes to slow readers: held once for every connection, handed to the kernel a piece at a
time (chanctl.server.transport.WebSocketTransport), and still every client's messages, whole and
in order, with websockets' own control frames between the pieces."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from chanctl.server.transport import CHUNK
from tests.support import TIMEOUT, RawClient

BODY = "x" * 1_000_000
MESSAGES = 24  # 24 MB to each client: past what the kernel's socket buffers take on loopback


async def joined_slow_clients(server, mint, count: int) -> list[RawClient]:
    # max_queue=1: a client stops reading its socket while a message waits to be received.
    clients = [await RawClient.connect(server.url, mint(i + 1), max_queue=1, max_size=None) for i in range(count)]
    for client in clients:
        await client.call(["1", "1", "room:lobby", "phx_join", {}])
    return clients


async def held_back(connections) -> None:
    """Until every connection holds frames back (the kernel took what it could)."""
    async with asyncio.timeout(TIMEOUT):
        while not all(c.transport.unsent() > 4 * 2**20 for c in connections):
            await asyncio.sleep(0.01)


async def test_a_large_broadcast_is_held_once_for_all_slow_members_and_arrives_whole(conformance_server, mint):
    async with conformance_server(outbound_buffer="64MiB") as server:
        clients = await joined_slow_clients(server, mint, 2)
        connections = [c for c in server.connections if c.user["id"] in (1, 2)]
        for n in range(MESSAGES):
            server.pubsub.broadcast("room:lobby", "bulk", {"n": n, "body": BODY})
        await held_back(connections)
        for connection in connections:
            # asyncio's own buffer (a copy per connection) holds at most one piece...
            assert connection.transport._transport.get_write_buffer_size() <= CHUNK
        # ...and the rest is the broadcast's frames themselves, shared by both connections.
        first, second = (set(map(id, c.transport._backlog)) for c in connections)
        assert first & second
        # A ping meanwhile: websockets' pong lands between two fragments, and the client takes it.
        pong = await clients[0].ws.ping()
        for client in clients:
            for n in range(MESSAGES):
                frame = await client.recv()
                assert frame[3:] == ["bulk", {"n": n, "body": BODY}]
        await asyncio.wait_for(pong, TIMEOUT)
        for connection in connections:
            assert connection.transport.unsent() == 0
            assert connection.transport._backlog is None
            # websockets' own high-water mark is back.
            assert connection.transport._transport.get_write_buffer_limits() == (8192, 32768)
        for client in clients:
            await client.close()


async def test_frames_held_back_go_out_before_the_close_frame(conformance_server, mint):
    async with conformance_server(outbound_buffer="64MiB") as server:
        [client] = await joined_slow_clients(server, mint, 1)
        [connection] = server.connections
        for n in range(MESSAGES):
            server.pubsub.broadcast("room:lobby", "bulk", {"n": n, "body": BODY})
        await held_back([connection])
        connection.close(4000, "bye")
        for n in range(MESSAGES):
            assert (await client.recv())[3:] == ["bulk", {"n": n, "body": BODY}]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd.code == 4000
