"""The chat sample over raw frames: handshake, join rules, events, fan-out."""

import pytest
import websockets

from tests.support import PRESENCE_EVENTS, RawClient


def status_of(exc: websockets.InvalidStatus) -> int:
    return exc.response.status_code


@pytest.mark.parametrize("token", [None, "garbage", "forged"])
async def test_bad_tokens_are_refused_at_the_handshake(chat_server, mint, token):
    if token == "forged":
        good = mint(42)
        token = good[:-3] + ("xyz" if not good.endswith("xyz") else "abc")
    with pytest.raises(websockets.InvalidStatus) as info:
        await RawClient.connect(chat_server.url, token)
    assert status_of(info.value) == 403
    assert chat_server.stats.refused == 1


async def test_heartbeat_before_any_join(chat_server, mint):
    async with await RawClient.connect(chat_server.url, mint(1)) as c:
        assert await c.call([None, "1", "phoenix", "heartbeat", {}]) == [
            None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]


@pytest.mark.parametrize(
    "user, topic, allowed",
    [
        (42, "room:42", True), (7, "room:42", True), (99, "room:42", False),
        (99, "room:lobby", True), (42, "room:nope", False),
        (42, "notifications:user_42", True), (7, "notifications:user_42", False),
        (5, "updates:all", True),
    ],
)
async def test_join_rules(chat_server, mint, user, topic, allowed):
    async with await RawClient.connect(chat_server.url, mint(user)) as c:
        reply = await c.call(["1", "1", topic, "phx_join", {}])
    if allowed:
        assert reply == ["1", "1", topic, "phx_reply", {"status": "ok", "response": {}}]
    else:
        assert reply == ["1", "1", topic, "phx_reply", {"status": "error", "response": {"reason": "unauthorized"}}]


async def test_new_msg_is_broadcast_to_every_member_with_server_fields(chat_server, mint):
    async with await RawClient.connect(chat_server.url, mint(42), ignore=PRESENCE_EVENTS) as ann, await RawClient.connect(chat_server.url, mint(7), ignore=PRESENCE_EVENTS) as bob:
        await ann.call(["1", "1", "room:42", "phx_join", {}])
        await bob.call(["4", "4", "room:42", "phx_join", {}])
        await ann.send(["1", "2", "room:42", "new_msg", {"body": "hi"}])
        frames = [await ann.recv(), await ann.recv()]
        assert frames[1] == ["1", "2", "room:42", "phx_reply", {"status": "ok", "response": {}}]
        broadcast = frames[0]
        assert broadcast[:4] == [None, None, "room:42", "new_msg"]
        assert broadcast[4]["body"] == "hi" and broadcast[4]["user_id"] == 42
        assert set(broadcast[4]) == {"body", "user_id", "id", "inserted_at"}
        assert await bob.recv() == broadcast


@pytest.mark.parametrize(
    "payload, errors",
    [
        ({"body": ""}, {"body": ["can't be blank"]}),
        ({}, {"body": ["can't be blank"]}),
        ({"body": 5}, {"body": ["must be of type string"]}),
        ({"body": "x" * 2001}, {"body": ["should be at most 2000 characters"]}),
        ("text", {"payload": ["must be of type object"]}),
    ],
)
async def test_invalid_new_msg_replies_field_errors(chat_server, mint, payload, errors):
    async with await RawClient.connect(chat_server.url, mint(42), ignore=PRESENCE_EVENTS) as c:
        await c.call(["1", "1", "room:42", "phx_join", {}])
        reply = await c.call(["1", "2", "room:42", "new_msg", payload])
        assert reply[4] == {"status": "error", "response": {"errors": errors}}
        await c.nothing()  # and nothing was broadcast


async def test_typing_replies_ok_and_unknown_events_say_so(chat_server, mint):
    async with await RawClient.connect(chat_server.url, mint(42), ignore=PRESENCE_EVENTS) as c:
        await c.call(["1", "1", "room:42", "phx_join", {}])
        assert (await c.call(["1", "2", "room:42", "typing", {"typing": True}]))[4] == {"status": "ok", "response": {}}
        assert (await c.call(["1", "3", "room:42", "dance", {}]))[4] == {
            "status": "error", "response": {"reason": "unknown event", "event": "dance"}}


async def test_updates_all_is_server_to_client_only(chat_server, mint):
    async with await RawClient.connect(chat_server.url, mint(5)) as c:
        await c.call(["1", "1", "updates:all", "phx_join", {}])
        reply = await c.call(["1", "2", "updates:all", "new_msg", {"body": "hi"}])
        assert reply[4]["status"] == "error"
        chat_server.pubsub.broadcast("updates:all", "release", {"v": 2})
        assert await c.recv() == [None, None, "updates:all", "release", {"v": 2}]


async def test_malformed_frame_closes_only_that_connection(chat_server, mint):
    async with await RawClient.connect(chat_server.url, mint(42), ignore=PRESENCE_EVENTS) as bad, await RawClient.connect(chat_server.url, mint(7), ignore=PRESENCE_EVENTS) as good:
        await good.call(["1", "1", "room:42", "phx_join", {}])
        await bad.send("this is not json")
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await bad.recv()
        assert info.value.rcvd.code == 1007 and "not valid JSON" in info.value.rcvd.reason
        assert (await good.call([None, "2", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
