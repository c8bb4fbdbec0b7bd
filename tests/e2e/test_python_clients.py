"""Third-party Python Phoenix Channels clients from PyPI against the chat sample.

``phoenix-channels-python-client``: join, a refused join and a broadcast received. The library is
subscribe-only: it has no public way to push an event and await its reply, so the broadcast it
receives is pushed by a raw-frame peer (user 7), whose reply is checked too.

``phxsocket``: join, a refused join, a push with its reply, a broadcast received. It speaks vsn
1.0.0 and counts its refs with JSON integers from 0, and finds its replies by the integer ref: a
server that echoed them as strings (or refused them) would leave every call waiting.
"""

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import phxsocket
import pytest
from phoenix_channels_python_client import PhoenixChannelsProtocolVersion, PHXChannelsClient
from phoenix_channels_python_client.exceptions import PHXTopicError

from tests.support import PRESENCE_EVENTS, TIMEOUT, RawClient

V1, V2 = PhoenixChannelsProtocolVersion.V1, PhoenixChannelsProtocolVersion.V2


def client_for(server, token: str, version: PhoenixChannelsProtocolVersion) -> PHXChannelsClient:
    # The library sends its key as ``api_key``; chanctl reads ``token``, which it keeps in the URL.
    return PHXChannelsClient(
        f"{server.url}?token={token}", "unused", protocol_version=version, auto_reconnect=False,
        join_timeout_s=TIMEOUT,
    )


async def bob_says_hello(server, mint) -> None:
    async with await RawClient.connect(server.url, mint(7), ignore=PRESENCE_EVENTS) as bob:
        assert (await bob.call(["1", "1", "room:42", "phx_join", {}]))[4]["status"] == "ok"
        reply = await bob.call(["1", "2", "room:42", "new_msg", {"body": "hello"}])
        assert reply[4] == {"status": "ok", "response": {}}


@pytest.mark.parametrize("version", [V2, V1])
async def test_python_client_joins_and_is_refused(chat_server, mint, version):
    async with client_for(chat_server, mint(42), version) as client:
        await client.subscribe_to_topic("room:42")
        assert client.is_topic_joined("room:42")
        with pytest.raises(PHXTopicError, match="unauthorized"):
            await client.subscribe_to_topic("room:nope")
        assert not client.is_topic_joined("room:nope")
        assert client.is_topic_joined("room:42")


async def test_python_client_receives_a_broadcast_over_v1(chat_server, mint):
    """V1 only: over V2 the library (0.4.1) drops every frame whose join_ref is not its channel's,
    and a broadcast carries a null join_ref, from Phoenix (fastlane) as from chanctl; phoenix.js
    accepts it (``Channel.isMember`` checks only a non-null join_ref). The library is at fault."""
    received: asyncio.Queue[dict] = asyncio.Queue()

    async def on_new_msg(payload: dict) -> None:
        await received.put(payload)

    async with client_for(chat_server, mint(42), V1) as client:
        await client.subscribe_to_topic("room:42")
        client.add_event_handler("room:42", "new_msg", on_new_msg)
        await bob_says_hello(chat_server, mint)
        message = await asyncio.wait_for(received.get(), TIMEOUT)
    assert message["body"] == "hello" and message["user_id"] == 7
    assert message["id"] and message["inserted_at"].endswith("Z")


def in_thread(call: Callable[..., Any], *args: Any) -> Any:
    """Await a blocking call of the threaded ``phxsocket`` (its own waits have no timeout), for at
    most TIMEOUT; the thread is a daemon, so a call that never returns fails the test, not the run."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not done.done():
            outcome(value)

    def run() -> None:
        try:
            result = call(*args)
        except BaseException as exc:  # handed to the test, which raises it
            loop.call_soon_threadsafe(settle, done.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, done.set_result, result)

    threading.Thread(target=run, daemon=True).start()
    return asyncio.wait_for(done, TIMEOUT)


async def test_phxsocket_with_integer_refs_joins_pushes_is_refused_and_gets_a_broadcast(chat_server, mint):
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[Any] = asyncio.Queue()
    client = phxsocket.Client(chat_server.url, {"token": mint(42)})
    assert await in_thread(client.connect)
    try:
        room = client.channel("room:42")
        room.on("new_msg", lambda payload: loop.call_soon_threadsafe(received.put_nowait, payload))
        assert await in_thread(room.join) == {}
        with pytest.raises(phxsocket.channel.ChannelConnectError, match="unauthorized"):
            await in_thread(client.channel("room:nope").join)
        sent = room.push("new_msg", {"body": "hi"}, reply=True)
        assert await in_thread(sent.wait_for_response) == {"status": "ok", "response": {}}
        mine = await asyncio.wait_for(received.get(), TIMEOUT)  # the broadcast reaches its sender too
        assert mine["body"] == "hi" and mine["user_id"] == 42
        await bob_says_hello(chat_server, mint)
        bobs = await asyncio.wait_for(received.get(), TIMEOUT)
        assert bobs["body"] == "hello" and bobs["user_id"] == 7
    finally:
        await in_thread(client.close)
    assert chat_server.stats.protocol_violations == 0
