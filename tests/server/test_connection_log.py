"""serve's INFO log: one line per connection event, saying who, from where and how it ended,
with every client-chosen string escaped (a close reason or a user id could carry a terminal escape)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import websockets

from tests.support import TIMEOUT, RawClient

CONFIG = 'server: {max_frame_size: 1KiB}\nauth: {secret: "${CHANCTL_SECRET}"}\ntopics:\n  "room:{id}": {join: true}\n'


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chanctl.server" and r.getMessage().startswith("connection")]


async def test_open_and_close_lines_say_who_where_and_how(make_server, mint, caplog):
    caplog.set_level(logging.INFO, logger="chanctl.server")
    async with make_server(CONFIG) as server:
        client = await RawClient.connect(server.url, mint("7\x1b[31m"))
        port = client.ws.local_address[1]
        await client.ws.close(4000, "bye\x1b[2J\u202e")
        big = await RawClient.connect(server.url, mint(42))
        await big.send("x" * 2000)  # over max_frame_size: the server closes with 1009
        await big.ws.wait_closed()
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.url + "?token=forged.token.here&vsn=2.0.0")
        await asyncio.wait_for(server.until_connections(0), TIMEOUT)  # a close is logged as its handler ends
        logged = lines(caplog)
    assert logged[0] == f"connection open: user 7\\x1b[31m from 127.0.0.1:{port} (socket user_socket:7\\x1b[31m)"
    assert logged[1].startswith(f"connection closed: user 7\\x1b[31m from 127.0.0.1:{port} after ")
    assert logged[1].endswith(": 4000 'bye\\x1b[2J\\u202e' (closed by the client)")
    assert logged[2].startswith("connection open: user 42 from 127.0.0.1:")
    assert logged[3].endswith(": 1009 'frame with 2000 bytes exceeds limit of 1024 bytes' (closed by the server)")
    assert logged[4].startswith("connection refused: from 127.0.0.1:") and "token invalid" in logged[4]
    assert all("\x1b" not in line for line in logged)
