"""History on a cluster: offsets assigned in Redis with the publish, recovery on any node."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis

from tests.cluster.conftest import APP
from tests.support import PRESENCE_EVENTS, TIMEOUT, RawClient

pytestmark = pytest.mark.redis

HISTORY = """
  "news:{id}":
    join: true
    history: {size: 10, ttl: 5m}
    events:
      shout: {do: broadcast}
  "feed:{id}":
    join: true
    history: {size: 100, ttl: 5m}
    events:
      shout: {do: broadcast}
  "brief:{id}":
    join: true
    history: {size: 100, ttl: 1s}
    events:
      shout: {do: broadcast}
"""


def history_yaml(redis_server, node: str) -> str:
    return APP + HISTORY + f"cluster:\n  redis: {redis_server.url}\n  node: {node}\n"


async def joined(node, mint, user: int, topic: str = "news:1", params: dict | None = None) -> tuple[RawClient, dict]:
    # An unbounded queue of unread frames: a sender that reads none of the broadcasts it gets would
    # otherwise stop reading its socket, and the nodes' shutdown wait 10 s for its close frame.
    client = await RawClient.connect(node.url, mint(user), ignore=PRESENCE_EVENTS, max_queue=None)
    reply = await client.call(["1", "1", topic, "phx_join", params or {}])
    assert reply[4]["status"] == "ok", reply
    return client, reply[4]["response"]


async def shouts(client: RawClient, count: int) -> list[dict]:
    return [(await client.recv_until(lambda f: f[3] == "shout"))[4] for _ in range(count)]


async def publish(client: RawClient, numbers, topic: str = "news:1") -> None:
    for n in numbers:
        await client.send(["1", None, topic, "shout", {"n": n}])


@pytest.fixture
async def nodes(start_node, redis_server):
    async with start_node("a", yaml=history_yaml(redis_server, "a")) as a, \
            start_node("b", yaml=history_yaml(redis_server, "b")) as b:
        yield a, b


async def test_every_node_delivers_the_same_offsets(nodes, mint):
    a, b = nodes
    (on_a, first), (on_b, second) = await joined(a, mint, 1), await joined(b, mint, 2)
    assert first == second == {"epoch": first["epoch"], "offset": 0}
    sender_a, _ = await joined(a, mint, 3)
    sender_b, _ = await joined(b, mint, 4)
    await asyncio.gather(publish(sender_a, range(0, 20)), publish(sender_b, range(100, 120)))
    seen_a, seen_b = await shouts(on_a, 40), await shouts(on_b, 40)
    assert seen_a == seen_b  # same payloads, same offsets, same order
    assert [m["offset"] for m in seen_a] == list(range(1, 41))
    assert {m["epoch"] for m in seen_a} == {first["epoch"]}


async def test_a_client_recovers_on_node_b_what_was_published_on_node_a(nodes, mint):
    a, b = nodes
    reader, position = await joined(a, mint, 1)
    sender, _ = await joined(a, mint, 2)
    await publish(sender, [1, 2])
    seen = await shouts(reader, 2)
    await reader.close()  # the reader goes away; node b has never heard of news:1
    await publish(sender, [3, 4, 5])
    await shouts(sender, 5)
    since = {"since": {"offset": seen[-1]["offset"], "epoch": position["epoch"]}}
    back, reply = await joined(b, mint, 1, params=since)
    assert reply == {"epoch": position["epoch"], "offset": 5, "recovered": True}
    await publish(sender, [6])
    assert [(m["n"], m["offset"]) for m in await shouts(back, 4)] == [(3, 3), (4, 4), (5, 5), (6, 6)]
    await back.nothing()
    assert (b.history.stats.recovered, b.history.stats.replayed) == (1, 3)


async def test_history_is_trimmed_by_size_and_refused_beyond_it(nodes, mint, redis_server):
    a, b = nodes
    sender, position = await joined(a, mint, 1)
    await publish(sender, range(1, 301))
    await shouts(sender, 300)
    r = aioredis.from_url(redis_server.url)
    try:
        assert 10 <= await r.xlen("chanctl:s:news:1") < 300  # MAXLEN ~ 10: whole stream nodes go
    finally:
        await r.aclose()
    epoch = position["epoch"]
    _, far = await joined(b, mint, 2, params={"since": {"offset": 289, "epoch": epoch}})
    assert far == {"epoch": epoch, "offset": 300, "recovered": False}  # 11 missed > size 10
    near, reply = await joined(b, mint, 3, params={"since": {"offset": 290, "epoch": epoch}})
    assert reply["recovered"] is True
    assert [m["n"] for m in await shouts(near, 10)] == list(range(291, 301))


async def test_history_older_than_the_ttl_is_not_replayed(nodes, mint, redis_server):
    a, b = nodes
    sender, position = await joined(a, mint, 1, topic="brief:1")
    await publish(sender, [1], topic="brief:1")
    await shouts(sender, 1)
    r = aioredis.from_url(redis_server.url)
    try:
        assert 0 < await r.pttl("chanctl:s:brief:1") <= 1000  # the stream goes ttl after the last broadcast
        (first_id, _), = await r.xrange("chanctl:s:brief:1")
        kept_since = int(first_id.split(b"-")[0])
        while (await r.time())[0] * 1000 <= kept_since + 1000:  # Redis's clock decides, not ours
            await asyncio.sleep(0.05)
        await publish(sender, [2], topic="brief:1")
        await shouts(sender, 1)
        assert await r.xlen("chanctl:s:brief:1") >= 1
    finally:
        await r.aclose()
    epoch = position["epoch"]
    _, stale = await joined(b, mint, 2, topic="brief:1", params={"since": {"offset": 0, "epoch": epoch}})
    assert stale == {"epoch": epoch, "offset": 2, "recovered": False}
    fresh, reply = await joined(b, mint, 3, topic="brief:1", params={"since": {"offset": 1, "epoch": epoch}})
    assert reply["recovered"] is True
    assert [m["n"] for m in await shouts(fresh, 1)] == [2]


async def test_history_lost_in_redis_means_a_new_epoch_and_no_recovery(nodes, mint, redis_server):
    a, b = nodes
    sender, position = await joined(a, mint, 1)
    await publish(sender, [1, 2])
    await shouts(sender, 2)
    r = aioredis.from_url(redis_server.url)
    try:
        await r.delete("chanctl:h:news:1", "chanctl:s:news:1")  # what a Redis restart without persistence does
    finally:
        await r.aclose()
    await publish(sender, [3])
    (third,) = await shouts(sender, 1)
    assert third["offset"] == 1 and third["epoch"] != position["epoch"]
    _, reply = await joined(b, mint, 2, params={"since": {"offset": 2, "epoch": position["epoch"]}})
    assert reply == {"epoch": third["epoch"], "offset": 1, "recovered": False}
    assert b.history.stats.failed == 1


async def test_broadcasts_heard_during_the_read_are_neither_lost_nor_repeated(nodes, mint):
    """The race the design must win: broadcasts reach node b over PUB/SUB while its join reads the
    stream. Some are covered by the read (dropped as duplicates), some come after it (sent after
    the replay). The read is held open until node b has heard both kinds."""
    a, b = nodes
    reader, position = await joined(a, mint, 1)
    sender, _ = await joined(a, mint, 2)
    await publish(sender, [1, 2])
    await shouts(sender, 2)
    await reader.close()
    await publish(sender, [3, 4])
    await shouts(sender, 2)
    redis = b.pubsub.redis
    pipeline, hear = redis.pipeline, b.pubsub.heard
    records: list[list] = []

    @contextlib.contextmanager
    def spied(topic: str):
        with hear(topic) as record:
            records.append(record)
            yield record

    async def heard(count: int) -> None:
        while len(records[0]) < count:
            await asyncio.sleep(0.01)

    def racing_pipeline(*args, **kwargs):
        """Node b's pipelines; the one carrying the join's read is held open around its answer."""
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        async def racing_execute(*args, **kwargs):
            if not any(command[0][:2] == ("EVALSHA", b.history.read_sha) for command in pipe.command_stack):
                return await execute(*args, **kwargs)
            await publish(sender, [5, 6])  # published before the read: in it, and heard during it
            await asyncio.wait_for(heard(2), TIMEOUT)
            result = await execute(*args, **kwargs)
            await publish(sender, [7, 8])  # published after the read: only heard
            await asyncio.wait_for(heard(4), TIMEOUT)
            return result

        pipe.execute = racing_execute
        return pipe

    redis.pipeline, b.pubsub.heard = racing_pipeline, spied
    try:
        back, reply = await joined(b, mint, 1, params={"since": {"offset": 2, "epoch": position["epoch"]}})
    finally:
        del redis.pipeline, b.pubsub.heard
    assert [number for number, _, _ in records[0]] == [5, 6, 7, 8]
    assert reply == {"epoch": position["epoch"], "offset": 6, "recovered": True}
    await publish(sender, [9])
    got = await shouts(back, 7)
    assert [(m["n"], m["offset"]) for m in got] == [(n, n) for n in range(3, 10)]
    await back.nothing()


async def test_redis_restarted_without_persistence_starts_a_new_epoch(nodes, mint, redis_server):
    """Everything Redis kept is gone, its scripts too: broadcasts while it is away are delivered on
    their node unnumbered; once back, the nodes load their scripts again, the topic numbers from a
    new epoch, and a rejoin with the old position learns it cannot be recovered."""
    a, b = nodes
    reader, position = await joined(b, mint, 1)
    sender, _ = await joined(a, mint, 2)
    await publish(sender, [1])
    (first,) = await shouts(reader, 1)
    redis_server.stop()
    await asyncio.wait_for(a.pubsub.wait_until(connected=False), TIMEOUT)
    await publish(sender, [2])
    (alone,) = (await shouts(sender, 2))[1:]  # its own first one, then this
    assert alone["n"] == 2 and "offset" not in alone  # delivered on node a, unnumbered, not kept
    redis_server.start()
    for client in (reader, sender):  # told that they may have missed broadcasts (phoenix.js rejoins)
        await client.recv_until(lambda f: f[3] == "phx_error", timeout=3 * TIMEOUT)
    await asyncio.wait_for(a.pubsub.wait_until(connected=True), TIMEOUT)
    since = {"since": {"offset": first["offset"], "epoch": position["epoch"]}}
    rejoined = await reader.call(["2", "2", "news:1", "phx_join", since])
    epoch = rejoined[4]["response"]["epoch"]
    assert rejoined[4]["response"] == {"epoch": epoch, "offset": 0, "recovered": False} and epoch != position["epoch"]
    await sender.call(["1", "3", "news:1", "phx_join", {}])  # the join_ref publish() sends with
    await publish(sender, [3])
    (third,) = await shouts(reader, 1)
    assert (third["n"], third["offset"], third["epoch"]) == (3, 1, epoch)


async def test_a_script_flush_costs_no_broadcast_and_no_recovery(nodes, mint, redis_server):
    a, b = nodes
    reader, first_position = await joined(b, mint, 1)
    first_epoch = first_position["epoch"]
    sender, _ = await joined(a, mint, 2)
    await publish(sender, [1])
    await shouts(reader, 1)
    r = aioredis.from_url(redis_server.url)
    try:
        await r.script_flush()
    finally:
        await r.aclose()
    await publish(sender, [2, 3])
    assert [(m["n"], m["offset"]) for m in await shouts(reader, 2)] == [(2, 2), (3, 3)]
    assert a.pubsub.dropped == 0 and a.pubsub.reconnects == 0
    r = aioredis.from_url(redis_server.url)
    try:
        await r.script_flush()  # and the read script, on node b
    finally:
        await r.aclose()
    back, reply = await joined(b, mint, 3, params={"since": {"offset": 1, "epoch": first_epoch}})
    assert reply["recovered"] is True
    assert [m["n"] for m in await shouts(back, 2)] == [2, 3]


async def test_many_joins_at_once_all_recover(nodes, mint):
    """More joins than redis-py's pool has connections (100): their reads share pipelines."""
    a, b = nodes
    sender, position = await joined(a, mint, 1)
    await publish(sender, range(1, 6))
    await shouts(sender, 5)
    clients = [await RawClient.connect(b.url, mint(1000 + i), ignore=PRESENCE_EVENTS) for i in range(150)]
    try:
        since = {"since": {"offset": 2, "epoch": position["epoch"]}}
        replies = await asyncio.gather(*[c.call(["1", "1", "news:1", "phx_join", since]) for c in clients])
        assert [r[4]["response"].get("recovered") for r in replies] == [True] * 150
        for client in clients:
            assert [m["n"] for m in await shouts(client, 3)] == [3, 4, 5]
    finally:
        await asyncio.gather(*[c.close() for c in clients])
