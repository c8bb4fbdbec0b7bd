"""History and recovery on a live server: offsets in payloads, the join reply, the replay order."""

from __future__ import annotations

from chanctl.server.metrics import render_metrics
from tests.support import PRESENCE_EVENTS, RawClient

YAML = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: true
    history: {size: 5, ttl: 5m}
    presence: true
    events: {new_msg: {do: broadcast}}
  "plain:{id}":
    join: true
    events: {new_msg: {do: broadcast}}
"""


async def publish(client: RawClient, ref: int, n: int, topic: str = "room:1") -> dict:
    """Push new_msg ``{n}`` and return the broadcast the publisher itself receives (before or
    after its reply)."""
    await client.send(["p", str(ref), topic, "new_msg", {"n": n}])
    replied, message = False, None
    while not replied or message is None:
        frame = await client.recv()
        if frame[3] == "phx_reply" and frame[1] == str(ref):
            replied = True
        elif frame[3] == "new_msg" and frame[4]["n"] == n:
            message = frame[4]
    return message


async def test_broadcasts_carry_offset_and_epoch_and_a_rejoin_recovers_exactly_what_it_missed(make_server, mint):
    async with make_server(YAML) as server:
        async with await RawClient.connect(server.url, mint(1), ignore=PRESENCE_EVENTS) as publisher, \
                await RawClient.connect(server.url, mint(2), ignore=PRESENCE_EVENTS) as reader:
            joined = await publisher.call(["p", "p", "room:1", "phx_join", {}])
            epoch = joined[4]["response"]["epoch"]
            assert joined[4]["response"] == {"epoch": epoch, "offset": 0}
            await reader.call(["r1", "r1", "room:1", "phx_join", {}])
            first = [await publish(publisher, 10 + n, n) for n in (1, 2)]
            assert [(m["offset"], m["epoch"], m["user_id"]) for m in first] == [(1, epoch, 1), (2, epoch, 1)]
            seen = await reader.recv_until(lambda f: f[3] == "new_msg" and f[4]["n"] == 2)
            assert seen[4]["offset"] == 2
            await reader.call(["r1", "r2", "room:1", "phx_leave", {}])
            for n in (3, 4, 5):
                await publish(publisher, 10 + n, n)
            since = {"since": {"offset": 2, "epoch": epoch}}
            rejoined = await reader.call(["r3", "r3", "room:1", "phx_join", since])
            assert rejoined[4]["response"] == {"epoch": epoch, "offset": 5, "recovered": True}
            await publish(publisher, 16, 6)
            replay = [await reader.recv_until(lambda f: f[3] == "new_msg") for _ in range(4)]
            assert [(f[0], f[4]["n"], f[4]["offset"]) for f in replay] == [
                ("r3", 3, 3), ("r3", 4, 4), ("r3", 5, 5), (None, 6, 6)]
            # More missed than the history keeps (size 5): nothing is replayed.
            await reader.call(["r3", "r4", "room:1", "phx_leave", {}])
            for n in range(7, 14):
                await publish(publisher, 10 + n, n)
            gap = await reader.call(["r5", "r5", "room:1", "phx_join", {"since": {"offset": 6, "epoch": epoch}}])
            assert gap[4]["response"] == {"epoch": epoch, "offset": 13, "recovered": False}
            await reader.nothing()
            # A topic without history is left alone: no offsets, no extra reply keys.
            plain = await reader.call(["p", "p", "plain:1", "phx_join", {"since": {"offset": 1}}])
            assert plain[4]["response"] == {}
            message = await publish(reader, 30, 1, topic="plain:1")
            assert "offset" not in message and "epoch" not in message
        metrics = render_metrics(server)[0].decode()
        for line in ("chanctl_history_recoveries_total 1.0", "chanctl_history_failed_recoveries_total 1.0",
                     "chanctl_history_replayed_total 3.0"):
            assert line in metrics
