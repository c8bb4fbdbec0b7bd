"""The admin plane (chanctl:admin) against a real chat-sample server, through chanctl.client."""

from __future__ import annotations

import asyncio

import pytest

from chanctl.client import Client
from chanctl.config.load import load_config_text
from chanctl.errors import ConfigError, JoinRefused
from chanctl.server.admin import ADMIN_TOPIC, AdminTap
from tests.support import SECRET, TIMEOUT, RawClient


async def next_event(channel, name: str):
    """The next event called ``name`` on ``channel``, skipping others."""
    async with asyncio.timeout(TIMEOUT):
        async for event in channel.events():
            if getattr(event, "event", None) == name:
                return event.payload


async def test_a_non_admin_token_is_refused(chat_server, mint):
    async with Client(chat_server.url, token=mint(42)) as client:
        with pytest.raises(JoinRefused) as refused:
            await client.channel(ADMIN_TOPIC).join(TIMEOUT)
    assert refused.value.response["reason"] == "unauthorized"
    async with Client(chat_server.url, token=mint(42, admin="yes")) as client:  # must be exactly true
        with pytest.raises(JoinRefused):
            await client.channel(ADMIN_TOPIC).join(TIMEOUT)


async def test_the_admin_claim_name_comes_from_the_config(make_server, mint):
    yaml = "auth: {secret: '${CHANCTL_SECRET}', admin_claim: ops}\ntopics: {'lobby': {join: true}}\n"
    async with make_server(yaml) as server, Client(server.url, token=mint(1, ops=True)) as client:
        await client.channel(ADMIN_TOPIC).join(TIMEOUT)
    async with make_server(yaml) as server, Client(server.url, token=mint(1, admin=True)) as client:
        with pytest.raises(JoinRefused):
            await client.channel(ADMIN_TOPIC).join(TIMEOUT)


async def test_snapshot_then_traffic_then_stats(chat_server, mint):
    async with Client(chat_server.url, token=mint(7)) as member, Client(chat_server.url, token=mint(1, admin=True)) as admin:
        room = member.channel("room:42")
        await room.join(TIMEOUT)
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        snapshot = await next_event(watch, "snapshot")
        assert snapshot["topics"]["room:42"] == {"subscribers": 1, "presence": 1}
        assert snapshot["connections_total"] == 2
        assert {"socket_id": "user_socket:7", "user": 7, "topics": ["room:42"]}.items() <= snapshot["connections"][0].items()
        assert chat_server.pubsub.tap is chat_server.admin_tap
        reply = await room.push("new_msg", {"body": "x" * 500}, TIMEOUT)
        assert reply.status == "ok"
        traffic = await next_event(watch, "traffic")
        inbound, outbound = traffic["entries"]
        assert (inbound["dir"], inbound["topic"], inbound["event"], inbound["user"]) == ("in", "room:42", "new_msg", 7)
        assert inbound["size"] == len('{"body":""}') + 500 and inbound["payload"].endswith("…")
        assert (outbound["dir"], outbound["recipients"]) == ("out", 1)
        stats = await next_event(watch, "stats")
        assert stats["connections"] == 2 and stats["topics"] == 2
        assert stats["by_topic"]["room:42"] == {"subscribers": 1, "presence": 1}
        async with Client(chat_server.url, token=mint(42)) as other:
            await other.channel("room:42").join(TIMEOUT)
            while not (traffic := await next_event(watch, "traffic"))["presence"]:
                pass
        [diff] = traffic["presence"]
        assert (diff["topic"], list(diff["joins"]), diff["leaves"]) == ("room:42", ["42"], {})
        await watch.leave(TIMEOUT)
    assert chat_server.pubsub.tap is None  # nobody watches: the data path is back to one check


async def test_commands_broadcast_inspect_disconnect(chat_server, mint):
    async with Client(chat_server.url, token=mint(7)) as member, Client(chat_server.url, token=mint(1, admin=True)) as admin:
        room = member.channel("room:42")
        await room.join(TIMEOUT)
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        sent = await watch.push("broadcast", {"topic": "room:42", "event": "notice", "payload": {"text": "hi"}}, TIMEOUT)
        assert (sent.status, sent.response) == ("ok", {"subscribers": 1})
        assert await next_event(room, "notice") == {"text": "hi"}
        inspected = await watch.push("inspect", {"topic": "room:42"}, TIMEOUT)
        assert inspected.status == "ok"
        assert [s["user"] for s in inspected.response["subscribers"]] == [7]
        assert list(inspected.response["presence"]) == ["7"]  # the chat sample tracks room members
        bad = await watch.push("broadcast", {"topic": "room:42", "event": "notice", "payload": [1]}, TIMEOUT)
        unknown = await watch.push("reboot", {}, TIMEOUT)
        assert bad.status == unknown.status == "error" and unknown.response["reason"] == "unknown event"
    seven, eight = await RawClient.connect(chat_server.url, mint(7)), await RawClient.connect(chat_server.url, mint(8))
    async with seven, eight:
        async with Client(chat_server.url, token=mint(1, admin=True), reconnect=False) as admin:
            watch = admin.channel(ADMIN_TOPIC)
            await watch.join(TIMEOUT)
            closed = await watch.push("disconnect", {"socket_id": "user_socket:7"}, TIMEOUT)
        assert closed.response == {"closed": 1}
        await asyncio.wait_for(seven.ws.wait_closed(), TIMEOUT)
        assert seven.ws.close_code == 1001
        assert (await eight.call([None, "1", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"


def test_the_tap_keeps_a_bounded_uniform_sample_and_counts_the_rest(chat_server):
    tap = AdminTap(chat_server)
    cap = tap._cap
    for n in range(10 * cap):
        tap.outbound("room:1", "e", {"n": n}, 1)
    assert len(tap._sample) == cap
    assert tap.dropped == 9 * cap
    kept = sorted(entry[5]["n"] for entry in tap._sample)
    assert kept[-1] >= cap  # later entries get in too: a sample, not the first `cap`


def test_a_config_cannot_declare_the_admin_topic():
    with pytest.raises(ConfigError) as failed:
        load_config_text(f"auth: {{secret: {SECRET}}}\ntopics: {{'chanctl:admin': {{join: true}}}}\n", "<test>", {})
    assert "chanctl:admin is reserved for the admin plane" in str(failed.value)
