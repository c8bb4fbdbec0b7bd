"""A third-party Python Phoenix Channels client from PyPI (``phoenix-channels-python-client``)
against the chat sample: join, a refused join and a broadcast received.

The library is subscribe-only: it has no public way to push an event and await its reply, so the
broadcast it receives is pushed by a raw-frame peer (user 7), whose reply is checked too.
"""

import asyncio

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
