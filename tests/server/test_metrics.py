"""``GET /healthz`` and ``GET /metrics`` on the server's port, read as a monitoring system would."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chanctl.client import Client
from chanctl.errors import JoinRefused
from tests.support import TIMEOUT, RawClient, until_trimmed


async def get(url: str) -> tuple[str, bytes]:
    def fetch() -> tuple[str, bytes]:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.headers["Content-Type"], response.read()

    return await asyncio.to_thread(fetch)


async def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    content_type, body = await get(f"http://127.0.0.1:{server.port}/metrics")
    assert content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_healthz(chat_server, mint):
    async with Client(chat_server.url, token=mint(7)):
        content_type, body = await get(f"http://127.0.0.1:{chat_server.port}/healthz")
    health = orjson.loads(body)
    assert content_type == "application/json"
    assert health["status"] == "ok" and health["connections"] == 1 and health["uptime"] >= 0


ROOMS = """
auth: {secret: '${CHANCTL_SECRET}'}
topics:
  "room:{id}":
    join: user.id != 99
    events:
      new_msg: {schema: {body: {type: string, minLength: 1}}, do: broadcast}
"""


@pytest.fixture
async def rooms_server(make_server):
    """Rooms without presence, so that every frame below is one the test caused."""
    async with make_server(ROOMS) as server:
        yield server


async def test_metrics_counters_move_as_traffic_flows(rooms_server, mint):
    before = await scrape(rooms_server)
    assert before[("chanctl_connections", ())] == 0
    assert before[("chanctl_messages_in_total", ())] == 0
    async with Client(rooms_server.url, token=mint(42)) as ann, Client(rooms_server.url, token=mint(7)) as bob:
        rooms = [ann.channel("room:42"), bob.channel("room:42")]
        for room in rooms:
            await room.join(TIMEOUT)
        async with Client(rooms_server.url, token=mint(99)) as intruder:
            with pytest.raises(JoinRefused):
                await intruder.channel("room:42").join(TIMEOUT)
        assert (await rooms[0].push("new_msg", {"body": "hi"}, TIMEOUT)).status == "ok"
        assert (await rooms[0].push("new_msg", {"body": ""}, TIMEOUT)).status == "error"
        during = await scrape(rooms_server)
    assert during[("chanctl_connections", ())] == 2  # the intruder has gone
    assert during[("chanctl_channels", (("pattern", "room:{id}"),))] == 2
    assert during[("chanctl_joins_total", (("outcome", "ok"),))] == 2
    assert during[("chanctl_joins_total", (("outcome", "error"),))] == 1
    assert during[("chanctl_replies_total", (("status", "ok"),))] == 1
    assert during[("chanctl_replies_total", (("status", "error"),))] == 1
    assert during[("chanctl_messages_in_total", ())] == 5  # three joins, two pushes
    assert during[("chanctl_broadcasts_total", ())] == 1
    # Frames written: three join replies, two push replies, the broadcast to both members.
    assert during[("chanctl_messages_out_total", ())] == 7
    assert during[("chanctl_received_bytes_total", ())] > 0 and during[("chanctl_sent_bytes_total", ())] > 0
    assert during[("chanctl_handler_latency_seconds_count", ())] == 2
    assert during[("chanctl_handler_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    assert during[("chanctl_slow_consumers_total", ())] == 0
    assert during[("chanctl_rate_limited_total", (("limit", "messages"),))] == 0
    assert during[("chanctl_rate_limited_total", (("limit", "presence_updates"),))] == 0

    async with await RawClient.connect(rooms_server.url, mint(7)) as raw:
        await raw.send("not json")
        await asyncio.wait_for(raw.ws.wait_closed(), TIMEOUT)
    await asyncio.wait_for(rooms_server.until_connections(0), TIMEOUT)  # a close is recorded as its handler ends
    after = await scrape(rooms_server)
    assert after[("chanctl_closes_total", (("code", "1007"),))] == 1
    assert after[("chanctl_connections", ())] == 0
    assert after[("chanctl_connections_opened_total", ())] == 4
    assert after[("chanctl_protocol_violations_total", ())] == 1
    assert after[("chanctl_closes_total", (("code", "1000"),))] == 3


async def test_the_tasks_gauge_falls_back_when_connections_end(rooms_server, mint):
    """``chanctl_tasks`` counts the event loop's tasks, so a task that outlives its connection shows
    (benchmarks/soak.py and benchmarks/fuzz.py read it)."""
    before = (await scrape(rooms_server))[("chanctl_tasks", ())]
    async with await RawClient.connect(rooms_server.url, mint(7)) as raw:
        await raw.call(["1", "1", "room:1", "phx_join", {}])
        during = (await scrape(rooms_server))[("chanctl_tasks", ())]
    await asyncio.wait_for(rooms_server.until_connections(0), TIMEOUT)
    assert during > before == (await scrape(rooms_server))[("chanctl_tasks", ())]


async def test_memory_trims_are_counted(make_server, mint):
    """The trims that closes schedule (chanctl.server.memory), and the RSS they gave back."""
    async with make_server(ROOMS.replace("topics:", "server: {memory_trim: 0.05s}\ntopics:")) as server:
        await (await RawClient.connect(server.url, mint(1))).close()
        await until_trimmed(server, 1)
        samples = await scrape(server)
    assert samples[("chanctl_memory_trims_total", ())] == 1
    assert samples[("chanctl_memory_returned_bytes_total", ())] == server.stats.memory.returned_bytes
    assert 0 < samples[("chanctl_memory_trim_seconds_total", ())] == server.stats.memory.seconds
