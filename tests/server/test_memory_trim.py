"""Free memory goes back to the system after sockets close (chanctl.server.memory).

The heap is fragmented by the test itself, as a burst of large frames leaves it: many buffers of
1-64 KiB freed, one in eight kept between them. glibc then holds the freed ones, and RSS stays up,
until the trim that a close schedules gives them back.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from chanctl.server.memory import CAN_TRIM, resident_bytes
from tests.support import TIMEOUT, RawClient

pytestmark = pytest.mark.skipif(not CAN_TRIM, reason="this C library has no malloc_trim (glibc has)")

CONFIG = """
server: {memory_trim: %s}
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}": {join: true}
"""


def fragment_the_heap(mib: int) -> list[bytearray]:
    """Allocate ``mib`` MiB of 1-64 KiB buffers and free seven in eight; returns the kept ones."""
    chooser = random.Random(15)
    kept, freed = [], []
    for i in range(mib * 1024 // 32):
        (kept if i % 8 == 0 else freed).append(bytearray(chooser.randint(1024, 64 * 1024)))
    del freed
    return kept


async def until_trimmed(server, trims: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while server.stats.memory.trims < trims:
            await asyncio.sleep(0.01)


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
        await asyncio.sleep(0.4)  # twice the delay: no second trim without a new close
        assert server.stats.memory.trims == 1
        await connect_and_close(server, mint)
        await until_trimmed(server, 2)


async def test_memory_trim_null_never_trims(make_server, mint):
    async with make_server(CONFIG % "null") as server:
        await connect_and_close(server, mint, count=3)
        await asyncio.sleep(0.3)
        assert server.stats.memory.trims == 0


async def test_a_pending_trim_is_dropped_at_shutdown(make_server, mint):
    server = make_server(CONFIG % "60s")
    async with server:
        await connect_and_close(server, mint)
        assert server.memory_trim.pending
    assert not server.memory_trim.pending
