"""The in-process harness against real configs: YAML rules, presence, a Python handler."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest

from chanctl.config.load import LoadedConfig, load_config_text
from chanctl.testing import ChannelHarness, JoinRefused, TestChannel, TestSocket, TestSubscription
from tests.support import SECRET, TIMEOUT

TICKER = f"""
auth: {{secret: "{SECRET}"}}
topics:
  "tick:{{id}}":
    join: topic.id != "closed"
    handler: tests.testing.handlers:Ticker
"""


@pytest.fixture
async def chat(chat_config: LoadedConfig) -> AsyncIterator[ChannelHarness]:
    async with ChannelHarness(chat_config) as harness:
        yield harness


@pytest.fixture
async def ticker() -> AsyncIterator[ChannelHarness]:
    async with ChannelHarness(load_config_text(TICKER, "<test>")) as harness:
        yield harness


async def test_join_broadcast_presence_and_leave(chat: ChannelHarness):
    socket = chat.connect(42)
    reply, room = await socket.join("room:42")
    assert reply == {}
    state = await room.assert_push("presence_state", timeout=TIMEOUT)
    assert list(state) == ["42"]
    await room.assert_broadcast("presence_diff", {"joins": {"42": {}}, "leaves": {}}, timeout=TIMEOUT)
    ref = room.push("new_msg", {"body": "hi"})
    await room.assert_reply(ref, "ok", timeout=TIMEOUT)
    got = await room.assert_broadcast("new_msg", {"body": "hi", "user_id": 42}, timeout=TIMEOUT)
    assert {"id", "inserted_at"} <= set(got)
    await room.refute_push()
    await room.leave(timeout=TIMEOUT)
    assert list(socket.unconsumed()) == []


async def test_refused_join_and_schema_error(chat: ChannelHarness):
    with pytest.raises(JoinRefused) as refused:
        await chat.connect(99).join("room:42", timeout=TIMEOUT)
    assert refused.value.response == {"reason": "unauthorized"}
    _, lobby = await chat.connect(99).join("room:lobby", timeout=TIMEOUT)
    ref = lobby.push("new_msg", {"body": ""})
    errors = await lobby.assert_reply(ref, "error", timeout=TIMEOUT)
    assert "body" in errors["errors"]
    await lobby.refute_broadcast("new_msg")


async def test_two_clients_see_each_other(chat: ChannelHarness):
    _, a = await chat.connect(42).join("room:42", timeout=TIMEOUT)
    await a.assert_push("presence_state", timeout=TIMEOUT)
    _, b = await chat.connect(7).join("room:42", timeout=TIMEOUT)
    await b.assert_push("presence_state", lambda p: set(p) == {"42", "7"}, timeout=TIMEOUT)
    await a.assert_push("presence_diff", {"joins": {"7": {}}}, timeout=TIMEOUT)
    await b.assert_push("presence_diff", {"joins": {"7": {}}}, timeout=TIMEOUT)  # the joiner too, as in Phoenix
    b.push("new_msg", {"body": "from b"})
    await a.assert_broadcast("new_msg", {"body": "from b", "user_id": 7}, timeout=TIMEOUT)
    await b.socket.close()
    await a.assert_push("presence_diff", {"leaves": {"7": {}}}, timeout=TIMEOUT)


async def test_assertion_failure_lists_the_inbox(chat: ChannelHarness):
    _, room = await chat.connect(42).join("room:42", timeout=TIMEOUT)
    with pytest.raises(AssertionError, match=r"(?s)expected a push 'nope'.*presence_state"):
        await room.assert_push("nope", timeout=0.05)
    with pytest.raises(AssertionError, match="unexpected push on room:42: broadcast 'presence_diff'"):
        await room.refute_push(timeout=TIMEOUT)


async def test_handler_timers_push_then_crash(ticker: ChannelHarness):
    reply, chan = await ticker.connect(5).join("tick:a", timeout=TIMEOUT)
    assert reply == {"hello": 5}
    ref = chan.push("start", {"n": 3})
    await chan.assert_reply(ref, timeout=TIMEOUT)
    for left in (3, 2, 1):
        assert await chan.assert_push("tick", timeout=TIMEOUT) == {"left": left}
    assert await chan.assert_exit(timeout=TIMEOUT) == "crashed"
    _, again = await chan.socket.join("tick:a", timeout=TIMEOUT)  # a crash leaves the socket usable
    ref = again.push("bye")
    assert await again.assert_reply(ref, payload={"bye": True}, timeout=TIMEOUT) == {"bye": True}
    assert await again.assert_exit("closed", timeout=TIMEOUT) == "closed"


async def test_handler_crash_in_handle_in_and_join(ticker: ChannelHarness):
    socket = ticker.connect(5)
    _, chan = await socket.join("tick:a", timeout=TIMEOUT)
    ref = chan.push("boom")
    assert await chan.assert_exit("crashed", timeout=TIMEOUT) == "crashed"
    await chan.refute_reply(ref)
    with pytest.raises(JoinRefused) as crashed:
        await socket.join("tick:b", {"crash": True}, timeout=TIMEOUT)
    assert crashed.value.response == {"reason": "join crashed"}
    with pytest.raises(JoinRefused) as refused:
        await socket.join("tick:b", {"refuse": True}, timeout=TIMEOUT)
    assert refused.value.response == {"reason": "go away"}
    with pytest.raises(JoinRefused) as gated:  # the YAML rule runs before the handler's join
        await socket.join("tick:closed", timeout=TIMEOUT)
    assert gated.value.response == {"reason": "unauthorized"}


async def test_payloads_make_a_json_round_trip(ticker: ChannelHarness):
    _, chan = await ticker.connect(5).join("tick:a", {"when": (1, 2)}, timeout=TIMEOUT)
    ref = chan.push("echo", {1: "int key"})
    assert await chan.assert_reply(ref, timeout=TIMEOUT) == {"got": {"1": "int key"}, "params": {"when": [1, 2]}}
    with pytest.raises(TypeError):
        chan.push("nope", {"not json": object()})


async def test_server_side_broadcast_reaches_joined_clients(chat: ChannelHarness):
    _, feed = await chat.connect(1).join("updates:all", timeout=TIMEOUT)
    assert chat.broadcast("updates:all", "news", {"n": 1}) == 1
    assert await feed.assert_broadcast("news", timeout=TIMEOUT) == {"n": 1}


async def test_subscription_sees_push_to_a_topic_nobody_joined():
    loaded = load_config_text(
        f"""
auth: {{secret: "{SECRET}"}}
topics:
  "dm:{{id}}":
    join: true
    events:
      send: {{do: push_to, to: '"inbox:" + string(payload.to)'}}
""",
        "<test>",
    )
    async with ChannelHarness(loaded) as harness:
        inbox = harness.subscribe("inbox:7")
        _, dm = await harness.connect(42).join("dm:1", timeout=TIMEOUT)
        ref = dm.push("send", {"to": 7, "text": "psst"})
        await dm.assert_reply(ref, timeout=TIMEOUT)
        got = await inbox.assert_broadcast("send", {"text": "psst", "user_id": 42}, timeout=TIMEOUT)
        assert got["to"] == 7
        await dm.refute_push()
        assert list(harness.unconsumed()) == []
        ref = dm.push("send", {"to": 7})
        await dm.assert_reply(ref, timeout=TIMEOUT)
        assert [m.event for m in harness.unconsumed()] == ["send"]  # the teardown check sees it
        inbox.unsubscribe()
        await dm.assert_reply(dm.push("send", {"to": 7, "n": 3}), timeout=TIMEOUT)
        await inbox.refute_broadcast("send", {"n": 3})


async def test_binary_payloads_travel_as_binary_frames(ticker: ChannelHarness):
    _, chan = await ticker.connect(5).join("tick:a", timeout=TIMEOUT)
    ref = chan.push("bin", b"\x01\x02")
    assert await chan.assert_reply(ref, payload=b"\x01\x02\x03\x04", timeout=TIMEOUT) == b"\x01\x02\x03\x04"
    assert await chan.assert_broadcast("blob", timeout=TIMEOUT) == b"\x02\x01"
    assert await chan.assert_push("blob", b"\x01\x02", timeout=TIMEOUT) == b"\x01\x02"
    chan.push("bin", b"\x05")
    await chan.assert_broadcast("blob", timeout=TIMEOUT)  # written together with the reply
    with pytest.raises(AssertionError, match=r"reply ref=3 on tick:a: \{\"status\":\"ok\",\"response\":\"b'\\\\x05\\\\x03\\\\x04'\"\}"):
        await chan.assert_push("never", timeout=0.05)


async def test_unmatched_topic_and_server_disconnect(chat: ChannelHarness):
    socket, other = chat.connect(42), chat.connect(7)
    with pytest.raises(JoinRefused) as unmatched:
        await socket.join("nope:1", timeout=TIMEOUT)
    assert unmatched.value.response == {"reason": "unmatched topic"}
    _, watcher = await other.join("room:42", timeout=TIMEOUT)
    await socket.join("room:42", timeout=TIMEOUT)
    await watcher.assert_push("presence_diff", {"joins": {"42": {}}}, timeout=TIMEOUT)
    assert chat.server.disconnect("user_socket:42") == 1
    assert await asyncio.wait_for(socket.wait_closed(), TIMEOUT) == 1001
    await watcher.assert_push("presence_diff", {"leaves": {"42": {}}}, timeout=TIMEOUT)
    assert not other.closed


def test_one_style_a_send_returns_at_once_and_a_wait_is_awaited():
    """Issue 9: one calling style over the whole harness, Phoenix.ChannelTest's: a call that only sends
    returns at once what Phoenix's returns (``push`` a ref, ``broadcast`` the recipients, ``connect`` a
    socket); a call that waits for the server or for a message is awaited."""
    waits = {"join", "leave", "close", "wait_closed", "settle", "aclose"}
    for cls in (ChannelHarness, TestSocket, TestChannel, TestSubscription):
        for name, member in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            awaited = name in waits or name.startswith(("assert_", "refute_"))
            assert inspect.iscoroutinefunction(member) is awaited, f"{cls.__name__}.{name}"
