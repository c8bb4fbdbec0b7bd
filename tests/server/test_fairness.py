"""One client's flood does not hold the server: other clients are answered while it is handled.

Frames a client sent ahead arrive in one read (asyncio reads up to 256 KiB at once, thousands of
small frames), and handling them needs no suspension, so without Connection's FAIR_BURST the
flooder's whole backlog ran before anyone else's frame. Order, not time, is asserted here; the
figures are in benchmarks/bench_fairness.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from chanctl.server.runtime import ChannelServer
from tests.support import RawClient

FLOOD = 3000
CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {rate_limit: null, outbound_buffer: 64MiB}
topics:
  "bench:{id}":
    join: true
    events:
      msg: {do: broadcast}
"""


async def test_a_heartbeat_is_answered_while_another_socket_floods(make_server: Callable[..., ChannelServer], mint: Callable[..., str]):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(1)) as flooder, await RawClient.connect(server.url, mint(2)) as probe:
            await flooder.call(["1", "1", "bench:flood", "phx_join", {}])
            frames = [json.dumps(["1", str(i), "bench:flood", "msg", {"n": i}]) for i in range(2, FLOOD + 2)]
            for frame in frames:  # queued by the client library, written back to back
                await flooder.ws.send(frame)
            await probe.send([None, "hb", "phoenix", "heartbeat", {}])
            assert (await probe.recv())[1] == "hb"
            handled_before_the_heartbeat = server.stats.replies["ok"]
            assert handled_before_the_heartbeat < FLOOD
            replies = 0
            while True:  # the flood is not over when the heartbeat's reply came
                frame = await flooder.recv()
                if frame[3] == "phx_reply":
                    replies += 1
                    if frame[1] == str(FLOOD + 1):
                        break
            assert replies == FLOOD  # and nothing of the flood was lost
