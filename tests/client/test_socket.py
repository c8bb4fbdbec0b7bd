"""chanctl.client against real servers: authToken, pushes before join, reconnect, heartbeats."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from chanctl.client import Client, endpoint_url
from chanctl.client.protocol import Refused, Status
from chanctl.config.load import load_config
from chanctl.errors import ClientError, ConnectRefused, ReplyTimeout
from chanctl.protocol.messages import PHX_ERROR
from chanctl.server.runtime import build_server
from chanctl.tokens import TokenSigner
from tests.support import SECRET, TIMEOUT


async def status_lines(queue: asyncio.Queue[Status], *wanted: str) -> None:
    """Wait until a status whose line contains each of ``wanted`` has been reported, in order."""
    async with asyncio.timeout(TIMEOUT):
        for text in wanted:
            while text not in str(await queue.get()):
                pass


def test_endpoint_url_follows_phoenix_js():
    assert endpoint_url("ws://h:4000/socket") == "ws://h:4000/socket/websocket"
    assert endpoint_url("http://h:4000/socket/") == "ws://h:4000/socket/websocket"
    assert endpoint_url("wss://h/socket/websocket") == "wss://h/socket/websocket"


async def test_auth_token_goes_in_the_subprotocol(chat_server, mint):
    async with Client(chat_server.url, auth_token=mint(7)) as client:
        assert await client.channel("updates:all").join(TIMEOUT) == {}
    with pytest.raises(ConnectRefused) as refused:
        await Client(chat_server.url, auth_token="forged").connect()
    assert refused.value.status == 403


async def test_a_push_before_the_join_completes_is_sent_once_joined(chat_server, mint):
    async with Client(chat_server.url, token=mint(42)) as client:
        room = client.channel("room:42")
        with pytest.raises(ClientError, match="join the channel first"):
            room.push("new_msg", {"body": "never joined"})
        joining = asyncio.create_task(room.join(TIMEOUT))
        await asyncio.sleep(0)  # one loop turn: the join frame is out, its reply is not back yet
        assert room.state == "joining"
        early = room.push("new_msg", {"body": "early"}, TIMEOUT)
        await joining
        assert (await early).status == "ok"


async def test_reconnects_and_rejoins_after_the_server_disconnects_it(chat_server, mint):
    statuses: asyncio.Queue[Status] = asyncio.Queue()
    async with Client(chat_server.url, token=mint(7), on_status=statuses.put_nowait) as client:
        updates = client.channel("updates:all")
        await updates.join(TIMEOUT)
        first_join_ref = updates.join_ref
        assert chat_server.disconnect("user_socket:7") == 1
        await status_lines(statuses, "disconnected (close code 1001)", "reconnected", "updates:all: rejoined")
        assert updates.state == "joined" and updates.join_ref != first_join_ref
        chat_server.pubsub.broadcast("updates:all", "news", {"n": 1})
        event = await asyncio.wait_for(anext(updates.events()), TIMEOUT)
        assert (event.event, event.payload) == ("news", {"n": 1})


async def test_a_channel_error_rejoins(mint, tmp_path):
    (tmp_path / "crashy.py").write_text(
        "from chanctl import Channel\n\nclass Crashy(Channel):\n"
        "    async def handle_in(self, event, payload):\n        raise RuntimeError('boom')\n"
    )
    yaml = "auth: {secret: '${CHANCTL_SECRET}'}\ntopics: {'crash:{id}': {join: true, handler: 'crashy:Crashy'}}\n"
    config = tmp_path / "crash.yaml"
    config.write_text(yaml)
    statuses: asyncio.Queue[Status] = asyncio.Queue()
    async with build_server(load_config(config, env={"CHANCTL_SECRET": SECRET}), host="127.0.0.1", port=0) as server:
        async with Client(server.url, token=mint(7), on_status=statuses.put_nowait) as client:
            channel = client.channel("crash:1")
            await channel.join(TIMEOUT)
            with pytest.raises(ReplyTimeout):
                await channel.push("boom", {}, 0.3)  # the channel dies instead of replying
            error = await asyncio.wait_for(anext(channel.events()), TIMEOUT)
            assert error.event == PHX_ERROR
            await status_lines(statuses, "crash:1: channel error", "crash:1: rejoined")
            assert channel.state == "joined"


async def test_a_missed_heartbeat_closes_the_socket_and_reconnects():
    opened: asyncio.Queue[None] = asyncio.Queue()

    async def silent(ws):  # accepts, never answers a heartbeat
        opened.put_nowait(None)
        await ws.wait_closed()

    statuses: asyncio.Queue[Status] = asyncio.Queue()
    async with websockets.serve(silent, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with Client(f"ws://127.0.0.1:{port}/socket", heartbeat=0.1, on_status=statuses.put_nowait):
            await asyncio.wait_for(opened.get(), TIMEOUT)
            await status_lines(statuses, "heartbeat timeout", "reconnected")
            await asyncio.wait_for(opened.get(), TIMEOUT)


SESSION_YAML = """
auth: {secret: "${CHANCTL_SECRET}", expiry_warning: 1h, expiry_grace: 0.2s}
topics:
  "room:{id}": {join: true}
"""


async def test_a_token_function_refreshes_in_band_and_reconnects_with_a_fresh_token(make_server):
    signer = TokenSigner(SECRET)
    minted: list[str] = []

    def token() -> str:
        minted.append(signer.mint(7, ttl=7200 if minted else 60))
        return minted[-1]

    lines: asyncio.Queue[Status] = asyncio.Queue()
    async with make_server(SESSION_YAML) as server, Client(server.url, token=token, on_status=lines.put_nowait):
        # Its first token is within the warning window: the server warns at once, the client refreshes.
        await status_lines(lines, "token refreshed")
        assert len(minted) == 2 and server.sessions.stats.refreshes["ok"] == 1
        (connection,) = server.connections
        server.disconnect(connection.socket_id)
        await status_lines(lines, "reconnected")
        assert len(minted) == 3  # the reconnect called the function again


async def test_a_fixed_token_says_it_cannot_be_refreshed(make_server):
    lines: asyncio.Queue[Status] = asyncio.Queue()
    token = TokenSigner(SECRET).mint(7, ttl=60)
    async with make_server(SESSION_YAML) as server, Client(server.url, token=token, on_status=lines.put_nowait):
        await status_lines(lines, "cannot be refreshed")
        assert server.sessions.stats.refreshes == {"ok": 0, "error": 0}


HISTORY_YAML = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}": {join: true, history: {size: 10, ttl: 5m}}
"""


async def next_offsets(channel, count: int) -> list[int]:
    got = []
    async with asyncio.timeout(TIMEOUT):
        async for event in channel.events():
            got.append(event.payload["offset"])
            if len(got) == count:
                return got
    return got


async def test_the_client_recovers_what_it_missed_while_reconnecting(make_server, mint):
    lines: asyncio.Queue[Status] = asyncio.Queue()
    async with make_server(HISTORY_YAML) as server, Client(server.url, token=mint(7), on_status=lines.put_nowait) as client:
        room = client.channel("room:1")
        await room.join(TIMEOUT)
        server.pubsub.broadcast("room:1", "n", {"n": 1})
        assert await next_offsets(room, 1) == [1]
        server.disconnect("user_socket:7")
        for n in (2, 3):  # the socket is closing: these never reach it, the rejoin recovers them
            server.pubsub.broadcast("room:1", "n", {"n": n})
        await status_lines(lines, "rejoined")
        server.pubsub.broadcast("room:1", "n", {"n": 4})
        assert await next_offsets(room, 3) == [2, 3, 4]
        # Too much missed for the history (size 10): the client says so and goes on.
        server.disconnect("user_socket:7")
        for n in range(5, 20):
            server.pubsub.broadcast("room:1", "n", {"n": n})
        await status_lines(lines, "could not recover the broadcasts missed since {'offset': 4")
        await status_lines(lines, "rejoined")
        server.pubsub.broadcast("room:1", "n", {"n": 20})
        assert await next_offsets(room, 1) == [20]


async def test_binary_broadcasts_reach_a_v2_client_and_a_v1_client_works(chat_server, mint):
    async with Client(chat_server.url, token=mint(7)) as v2, Client(chat_server.url, token=mint(8), vsn="1.0.0") as v1:
        binary, plain = v2.channel("updates:all"), v1.channel("updates:all")
        await binary.join(TIMEOUT)
        chat_server.pubsub.broadcast("updates:all", "blob", b"\x00\xff")
        event = await asyncio.wait_for(anext(binary.events()), TIMEOUT)
        assert (event.event, event.payload) == ("blob", b"\x00\xff")
        await plain.join(TIMEOUT)  # after: a V1 subscriber cannot be sent a binary broadcast
        chat_server.pubsub.broadcast("updates:all", "news", {"n": 1})
        for channel in (binary, plain):
            event = await asyncio.wait_for(anext(channel.events()), TIMEOUT)
            assert (event.event, event.payload) == ("news", {"n": 1})


async def test_a_403_on_reconnect_is_final(chat_server, mint):
    statuses: asyncio.Queue[Status] = asyncio.Queue()
    async with Client(chat_server.url, token=mint(7), on_status=statuses.put_nowait) as client:
        updates = client.channel("updates:all")
        await updates.join(TIMEOUT)
        client.token = "forged"  # as if it expired: the server refuses the reconnect
        assert chat_server.disconnect("user_socket:7") == 1
        stopped = await asyncio.wait_for(client.wait_stopped(), TIMEOUT)
        assert isinstance(stopped, Refused) and stopped.status == 403 and stopped.final
        with pytest.raises(ConnectRefused):
            await asyncio.wait_for(anext(updates.events()), TIMEOUT)
        assert updates.state == "closed"
