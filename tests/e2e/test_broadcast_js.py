"""``chanctl send --broadcast`` reaches the official phoenix.js client through the admin plane."""

from __future__ import annotations

import asyncio

import pytest

from tests.cli.run import chanctl, user_args
from tests.support import run_js, until_subscribed

pytestmark = pytest.mark.node

SCENARIO = """
const socket = new Socket(env.URL, { transport: WebSocket, params: { token: env.TOKEN } });
socket.connect();
const room = socket.channel("room:lobby");
const got = new Promise((ok) => room.on("announce", ok));
await until((ok) => room.join().receive("ok", ok));
emit({ joined: true });
emit({ announce: await got });
socket.disconnect();
"""


async def test_a_broadcast_from_the_cli_reaches_phoenix_js(chat_server, mint):
    scenario = asyncio.create_task(run_js(SCENARIO, URL=chat_server.url.removesuffix("/websocket"), TOKEN=mint(7)))
    await until_subscribed(chat_server.pubsub, "room:lobby", scenario)
    result = await chanctl("send", "room:lobby", "announce", '{"text":"maintenance at 5"}', "--broadcast",
                           *user_args(chat_server.url, "1"))
    assert (result.code, result.out) == (0, 'ok {"subscribers":1}\n'), result.err
    assert await scenario == [{"joined": True}, {"announce": {"text": "maintenance at 5"}}]
