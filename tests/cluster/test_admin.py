"""The admin plane and forced disconnects see, and reach, every node of the cluster."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from chanctl.client import Client
from chanctl.server import admin as admin_module
from chanctl.server.admin import ADMIN_TOPIC
from tests.cluster.test_broadcast import joined
from tests.server.test_admin import next_event
from tests.support import TIMEOUT, RawClient


async def peers(*nodes) -> None:
    async with asyncio.timeout(TIMEOUT):
        for node in nodes:
            await node.cluster.wait_peers(len(nodes) - 1)


async def test_server_disconnect_closes_the_sockets_on_every_node(two_nodes, mint):
    a, b = two_nodes
    await peers(a, b)
    on_a, on_b = await RawClient.connect(a.url, mint(7)), await RawClient.connect(b.url, mint(7))
    other = await RawClient.connect(b.url, mint(8))
    assert a.disconnect("user_socket:7") == 1
    for client in (on_a, on_b):
        await asyncio.wait_for(client.ws.wait_closed(), TIMEOUT)
        assert client.ws.close_code == 1001
    assert (await other.call([None, "1", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"


async def test_admin_commands_and_stats_span_the_cluster(two_nodes, mint):
    a, b = two_nodes
    await peers(a, b)
    member_a, member_b = await joined(a, mint, 7), await joined(b, mint, 8)
    async with Client(a.url, token=mint(1, admin=True), reconnect=False) as admin:
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        snapshot = await next_event(watch, "snapshot")
        assert [(n["name"], n["status"]) for n in snapshot["nodes"]] == [("a", "up"), ("b", "up")]
        inspected = await watch.push("inspect", {"topic": "room:1"}, TIMEOUT)
        assert sorted((s["user"], s["node"]) for s in inspected.response["subscribers"]) == [(7, "a"), (8, "b")]
        assert sorted(inspected.response["presence"]) == ["7", "8"]
        stats = await next_event(watch, "stats")
        rows = {row["node"]: row for row in stats["nodes"]}
        assert rows["a"]["self"] and rows["a"]["status"] == rows["b"]["status"] == "up"
        assert rows["b"]["connections"] == 1 and rows["b"]["subscriptions"] == 1
        assert stats["cluster"]["nodes"] == 2 and stats["cluster"]["connections"] == 3  # the admin's own too
        sent = await watch.push("broadcast", {"topic": "room:1", "event": "notice", "payload": {"n": 1}}, TIMEOUT)
        assert sent.status == "ok"
        for member in (member_a, member_b):
            assert (await member.recv_until(lambda f: f[3] == "notice"))[4] == {"n": 1}
        closed = await watch.push("disconnect", {"socket_id": "user_socket:8"}, TIMEOUT)
        assert closed.response == {"closed": 1}
        await asyncio.wait_for(member_b.ws.wait_closed(), TIMEOUT)


async def test_inspect_counts_every_subscriber_of_a_peer_whose_list_was_cut(two_nodes, mint, monkeypatch):
    """A peer lists its subscribers up to LIST_BYTES, as this node does, but says how many it has:
    the total is the cluster's, not the length of what could be shown."""
    a, b = two_nodes
    await peers(a, b)
    members = [await joined(a, mint, 7)] + [await joined(b, mint, user) for user in (8, 9, 10)]
    monkeypatch.setattr(admin_module, "LIST_BYTES", 300)  # about one subscriber's entry
    async with Client(a.url, token=mint(1, admin=True), reconnect=False) as admin:
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        inspected = (await watch.push("inspect", {"topic": "room:1"}, TIMEOUT)).response
    assert inspected["subscribers_total"] == 4
    assert 0 < len(inspected["subscribers"]) < 4
    for member in members:
        await member.close()


async def test_stats_list_a_node_that_went_away(start_node, mint):
    async with start_node("a") as a:
        async with start_node("b") as b:
            await peers(a, b)
        async with Client(a.url, token=mint(1, admin=True), reconnect=False) as admin:
            watch = admin.channel(ADMIN_TOPIC)
            await watch.join(TIMEOUT)
            stats = await next_event(watch, "stats")
            assert [(row["node"], row["status"]) for row in stats["nodes"]] == [("a", "up"), ("b", "down")]


async def test_the_traffic_tail_shows_every_node(two_nodes, mint):
    a, b = two_nodes
    await peers(a, b)
    sender = await joined(b, mint, 8)
    async with Client(a.url, token=mint(1, admin=True), reconnect=False) as admin:
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        await next_event(watch, "stats")  # b has been asked once: its tap is on for us now
        await sender.call(["1", "2", "room:1", "shout", {"n": 1}])
        async with asyncio.timeout(2 * TIMEOUT):
            while True:
                entries = (await next_event(watch, "traffic"))["entries"]
                if any(e["node"] == "b" and e["dir"] == "in" and e["event"] == "shout" for e in entries):
                    break


async def test_a_revocation_reaches_every_node_and_later_ones(start_node, mint):
    token = mint(7)
    async with start_node("a") as a, start_node("b") as b:
        await peers(a, b)
        on_b = await RawClient.connect(b.url, token)
        assert a.revoke(a.sessions.revoke_user(7)) == 0  # none of user 7's sockets is on a
        await asyncio.wait_for(on_b.ws.wait_closed(), TIMEOUT)
        assert on_b.ws.close_code == 4403
        async with start_node("c") as c:  # started after: it read the revocation from Redis
            with pytest.raises(websockets.InvalidStatus) as refused:
                await RawClient.connect(c.url, token)
            assert refused.value.response.status_code == 403
