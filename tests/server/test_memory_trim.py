"""Free memory goes back to the system after sockets close (chanctl.server.memory).

The heap is fragmented by the test itself, as a burst of large frames leaves it: many buffers of
1-64 KiB freed, one in eight kept between them. glibc then holds the freed ones, and RSS stays up,
until the trim that a close schedules gives them back.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_trim import fragment_the_heap
from chanctl.server.memory import CAN_TRIM, resident_bytes
from tests.support import RawClient, until_trimmed

pytestmark = pytest.mark.skipif(not CAN_TRIM, reason="this C library has no malloc_trim (glibc has)")

CONFIG = """
server: {memory_trim: %s}
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}": {join: true}
"""


async def connect_and_close(server, mint, count: int = 1) -> None:
    clients = [await RawClient.connect(server.url, mint(i + 1)) for i in range(count)]
    for client in clients:
        await client.call(["1", "1", "room:1", "phx_join", {}])
    for client in clients:
        await client.close()
    await server.until_connections(0)


async def test_a_close_gives_the_freed_heap_back_once_the_trim_delay_passes(make_server, mint):
    async with make_server(CONFIG % "0.2s") as server:
        kept = fragment_the_heap(64)
        high = resident_bytes()
        await connect_and_close(server, mint)
        assert server.stats.memory.trims == 0  # not at the close: after the delay
        await until_trimmed(server, 1)
        assert server.stats.memory.returned_bytes > 32 * 2**20
        assert resident_bytes() < high - 32 * 2**20
        del kept


async def test_closes_in_a_burst_make_one_trim_and_a_later_close_another(make_server, mint):
    async with make_server(CONFIG % "0.2s") as server:
        await connect_and_close(server, mint, count=20)
        await until_trimmed(server, 1)
        assert server.stats.memory.trims == 1 and not server.memory_trim.pending  # none more without a new close
        await connect_and_close(server, mint)
        assert server.memory_trim.pending
        await until_trimmed(server, 2)


async def test_memory_trim_null_never_trims(make_server, mint):
    async with make_server(CONFIG % "null") as server:
        await connect_and_close(server, mint, count=3)
        assert not server.memory_trim.pending and server.stats.memory.trims == 0


async def test_a_pending_trim_is_dropped_at_shutdown(make_server, mint):
    server = make_server(CONFIG % "60s")
    async with server:
        await connect_and_close(server, mint)
        assert server.memory_trim.pending
    assert not server.memory_trim.pending
