"""History on a cluster node: numbered as on one node, but never a recovery it cannot prove."""

from __future__ import annotations

import pytest

from tests.support import PRESENCE_EVENTS, RawClient

pytestmark = pytest.mark.redis

HISTORY = """
  "news:{id}":
    join: true
    history: {size: 10, ttl: 5m}
    events:
      shout: {do: broadcast}
"""


async def test_a_cluster_node_numbers_broadcasts_but_answers_since_with_recovered_false(start_node, redis_server, mint):
    from tests.cluster.conftest import APP

    yaml = APP + HISTORY + f"cluster:\n  redis: {redis_server.url}\n  node: a\n"
    async with start_node("a", yaml=yaml) as node:
        async with await RawClient.connect(node.url, mint(7), ignore=PRESENCE_EVENTS) as client:
            joined = await client.call(["1", "1", "news:1", "phx_join", {}])
            epoch = joined[4]["response"]["epoch"]
            await client.send(["1", "2", "news:1", "shout", {"n": 1}])
            shout = await client.recv_until(lambda f: f[3] == "shout")
            assert (shout[4]["offset"], shout[4]["epoch"]) == (1, epoch)
            await client.call(["1", "3", "news:1", "phx_leave", {}])
            again = await client.call(["4", "4", "news:1", "phx_join", {"since": {"offset": 1, "epoch": epoch}}])
            assert again[4]["response"]["recovered"] is False
