"""Redis restarted, or unreachable: nodes degrade, reconnect, resubscribe and tell their topics."""

from __future__ import annotations

import asyncio
import signal

import orjson

from tests.cluster.test_broadcast import joined
from tests.support import TIMEOUT


async def health(server) -> dict:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await reader.read()  # websockets closes after an HTTP response
        writer.close()
    return orjson.loads(data.split(b"\r\n\r\n", 1)[1])


async def test_healthz_and_metrics_name_the_node(two_nodes):
    a, _ = two_nodes
    assert (await health(a))["status"] == "ok" and (await health(a))["node"] == "a"
    assert (await health(a))["redis"] == "ok"


async def test_redis_restarted_mid_traffic(two_nodes, mint, redis_server):
    a, b = two_nodes
    on_a, on_b = await joined(a, mint, 1), await joined(b, mint, 2)
    redis_server.stop()
    await asyncio.wait_for(a.pubsub.wait_until(connected=False), TIMEOUT)
    await asyncio.wait_for(b.pubsub.wait_until(connected=False), TIMEOUT)
    assert (await health(a))["status"] == "degraded" and (await health(a))["redis"] == "unreachable"
    # Local delivery keeps working while Redis is away.
    sender = await joined(a, mint, 3)
    await sender.call(["1", "2", "room:1", "shout", {"n": 1}])
    assert (await on_a.recv_until(lambda f: f[3] == "shout"))[4]["n"] == 1
    redis_server.start()
    # Back: every channel whose topic may have missed broadcasts is told, so phoenix.js rejoins.
    for client in (on_a, on_b, sender):
        frame = await client.recv_until(lambda f: f[3] == "phx_error", timeout=3 * TIMEOUT)
        assert frame == ["1", "1", "room:1", "phx_error", {"reason": "channel_crash"}] or frame[2:4] == ["room:1", "phx_error"]
    assert (await health(b))["status"] == "ok"
    # Rejoined, they get each other's broadcasts across nodes again.
    for client in (on_a, on_b, sender):
        assert (await client.call(["2", "3", "room:1", "phx_join", {}]))[4]["status"] == "ok"
    await on_b.call(["2", "4", "room:1", "shout", {"n": 2}])
    for client in (on_a, on_b, sender):
        assert (await client.recv_until(lambda f: f[3] == "shout" and f[4]["n"] == 2))[4]["n"] == 2
    assert a.pubsub.reconnects == 1 and b.pubsub.reconnects == 1


async def test_a_node_starts_while_redis_is_down(start_node, mint, redis_server):
    redis_server.stop()
    async with start_node("lonely") as node:
        assert (await health(node))["status"] == "degraded"
        client, sender = await joined(node, mint, 1), await joined(node, mint, 2)
        await sender.call(["1", "2", "room:1", "shout", {"n": 1}])
        assert (await client.recv_until(lambda f: f[3] == "shout"))[4]["n"] == 1
        redis_server.start()
        await asyncio.wait_for(node.pubsub.wait_until(connected=True), 3 * TIMEOUT)
        await client.recv_until(lambda f: f[3] == "phx_error", timeout=TIMEOUT)


async def test_a_slow_redis_never_grows_the_nodes_memory(start_node, mint, redis_server):
    async with start_node("a", "  max_pending: 4KiB\n") as a:
        receiver = await joined(a, mint, 1)
        redis_server.proc.send_signal(signal.SIGSTOP)  # Redis stops reading: PUBLISHes pile up here
        try:
            payload = {"x": "y" * 100}
            sent = [a.pubsub.broadcast("room:1", "bulk", payload) for _ in range(200)]
            assert a.pubsub.dropped > 0 and sent.count(0) == a.pubsub.dropped
            assert a.pubsub.dropped >= 200 - 4096 // 100
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        # What fitted is delivered once Redis reads again, in order.
        first = await receiver.recv_until(lambda f: f[3] == "bulk", timeout=3 * TIMEOUT)
        assert first[4] == payload


async def test_a_silent_subscription_is_noticed_by_its_probe(redis_server):
    from chanctl.pubsub.redis import RedisPubSub

    pubsub = RedisPubSub(redis_server.url, "probe", probe=0.3)
    await pubsub.start()
    assert pubsub.connected
    redis_server.proc.send_signal(signal.SIGSTOP)  # TCP stays up; only the PING goes unanswered
    try:
        await asyncio.wait_for(pubsub.wait_until(connected=False), TIMEOUT)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await asyncio.wait_for(pubsub.wait_until(connected=True), 3 * TIMEOUT)
    await pubsub.close()
