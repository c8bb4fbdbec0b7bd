"""WebSocketTransport: the invariants websockets.broadcast() checks, checked on every write."""

from __future__ import annotations

import asyncio
import logging

from chanctl.server.transport import WebSocketTransport
from tests.support import TIMEOUT, RawClient


async def _joined(server, mint) -> tuple[RawClient, WebSocketTransport]:
    client = await RawClient.connect(server.url, mint(1))
    await client.call(["1", "1", "room:lobby", "phx_join", {}])
    (connection,) = server.connections
    return client, connection.transport


async def test_writes_whole_frames_while_open(server, mint):
    client, transport = await _joined(server, mint)
    frames = [transport.encoder(server_serializer(server)).frame(b'[null,null,"room:lobby","e",{"n":%d}]' % n) for n in (1, 2)]
    assert transport.write(frames) is True
    assert [(await client.recv())[4] for _ in frames] == [{"n": 1}, {"n": 2}]
    await client.close()


async def test_refuses_to_write_during_a_fragmented_send(server, mint, caplog):
    client, transport = await _joined(server, mint)
    started, release = asyncio.Event(), asyncio.Event()

    async def fragments():
        yield "[null,null,"
        started.set()  # asked for the next fragment: the first is out, the send is in progress
        await release.wait()
        yield '"room:lobby","frag",{}]'

    sending = asyncio.create_task(transport.ws.send(fragments()))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    assert transport.ws.send_in_progress is not None
    with caplog.at_level(logging.WARNING, "chanctl.transport"):
        assert transport.write([transport.encoder(server_serializer(server)).frame(b"[]")]) is False
    assert "a fragmented message is being sent" in caplog.text
    release.set()
    await sending
    assert (await client.recv())[3] == "frag"  # the fragments were not interleaved with ours
    await client.close()


async def test_refuses_to_write_once_closing(server, mint):
    client, transport = await _joined(server, mint)
    await asyncio.wait_for(transport.close(1000, "bye"), TIMEOUT)
    assert transport.write([b"\x81\x02[]"]) is False
    assert transport.close_code == 1000


def server_serializer(server):
    (connection,) = server.connections
    return connection.proto.serializer
