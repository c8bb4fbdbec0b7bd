"""Broadcasts cross nodes: one PUBLISH each, the same order everywhere, broadcast_from excludes the sender."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.support import PRESENCE_EVENTS, QUIET, TIMEOUT, RawClient

IGNORE = frozenset(PRESENCE_EVENTS)


async def joined(server, mint, user: int, topic: str = "room:1") -> RawClient:
    client = await RawClient.connect(server.url, mint(user), ignore=IGNORE)
    reply = await client.call(["1", "1", topic, "phx_join", {}])
    assert reply[4]["status"] == "ok", reply
    return client


async def test_a_broadcast_reaches_subscribers_on_every_node(two_nodes, mint):
    a, b = two_nodes
    on_a, on_b, sender = await joined(a, mint, 1), await joined(b, mint, 2), await joined(a, mint, 3)
    reply = await sender.call(["1", "2", "room:1", "shout", {"n": 1}])
    assert reply[4]["status"] == "ok"
    for client in (on_a, on_b, sender):
        frame = await client.recv_until(lambda f: f[3] == "shout")
        assert frame[:4] == [None, None, "room:1", "shout"] and frame[4]["n"] == 1 and frame[4]["user_id"] == 3
    # Exactly once each, and never to a topic nobody joined.
    for client in (on_a, on_b, sender):
        await client.nothing()


async def test_broadcast_from_excludes_the_sender_on_every_node(two_nodes, mint):
    a, b = two_nodes
    sender, same_node, other_node = await joined(a, mint, 1), await joined(a, mint, 2), await joined(b, mint, 3)
    await sender.call(["1", "2", "room:1", "shout_from", {"n": 1}])
    for client in (same_node, other_node):
        assert (await client.recv_until(lambda f: f[3] == "shout_from"))[4]["n"] == 1
    await sender.nothing()


async def test_every_subscriber_sees_the_same_interleaving(two_nodes, mint):
    """Two publishers on two nodes, 1,000 numbered messages each: one order everywhere."""
    a, b = two_nodes
    subscribers = [await joined(node, mint, 10 + i) for i, node in enumerate((a, b, a, b))]
    publishers = [await joined(a, mint, 1, "room:1"), await joined(b, mint, 2, "room:1")]
    count = 1000

    async def publish(client: RawClient, who: str) -> None:
        for n in range(count):
            await client.send(["1", None, "room:1", "shout", {"who": who, "n": n}])

    async def collect(client: RawClient) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        while len(seen) < 2 * count:
            frame = await client.recv_until(lambda f: f[3] == "shout", timeout=4 * TIMEOUT)
            seen.append((frame[4]["who"], frame[4]["n"]))
        return seen

    collecting = [asyncio.ensure_future(collect(c)) for c in subscribers + publishers]
    await asyncio.gather(publish(publishers[0], "a"), publish(publishers[1], "b"))
    sequences = await asyncio.gather(*collecting)
    first = sequences[0]
    assert sorted(first) == sorted([("a", n) for n in range(count)] + [("b", n) for n in range(count)])
    for who in "ab":  # each publisher's own order is kept
        assert [n for w, n in first if w == who] == list(range(count))
    for sequence in sequences[1:]:
        assert sequence == first


async def test_a_node_subscribes_to_a_topic_only_while_it_has_subscribers(two_nodes, mint, redis_server):
    a, b = two_nodes
    probe = aioredis.Redis.from_url(redis_server.url)
    channel = "chanctl:t:room:7"
    assert (await probe.pubsub_numsub(channel))[0][1] == 0
    client = await joined(a, mint, 1, "room:7")
    assert (await probe.pubsub_numsub(channel))[0][1] == 1  # confirmed before the join reply
    other = await joined(b, mint, 2, "room:7")
    assert (await probe.pubsub_numsub(channel))[0][1] == 2
    await client.call(["1", "3", "room:7", "phx_leave", {}])
    await other.close()
    async with asyncio.timeout(TIMEOUT):  # UNSUBSCRIBE goes out after the leave: wait for Redis to see it
        while (await probe.pubsub_numsub(channel))[0][1]:
            await asyncio.sleep(QUIET / 10)
    # A broadcast to that topic still publishes once and reaches nobody.
    assert a.pubsub.broadcast("room:7", "x", {}) == 0
    await probe.aclose()


async def test_one_publish_per_broadcast(two_nodes, mint):
    a, b = two_nodes
    await joined(a, mint, 1, "plain:1"), await joined(b, mint, 2, "plain:1")
    before = a.pubsub.published + b.pubsub.published
    sender = await joined(b, mint, 3, "plain:1")
    await sender.call(["1", "2", "plain:1", "shout", {}])
    await sender.recv_until(lambda f: f[3] == "shout")
    # Counted once Redis answered the PUBLISH, which may be after its echo reached the sender.
    async with asyncio.timeout(TIMEOUT):
        while a.pubsub.published + b.pubsub.published == before:
            await asyncio.sleep(QUIET / 10)
    assert a.pubsub.published + b.pubsub.published - before == 1
