"""Presence replicated: one list on every node, leaves everywhere when a node stops or dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.cluster.conftest import cluster_yaml
from tests.support import TIMEOUT, RawClient, run_js


async def member(server_url: str, mint, user: int, topic: str = "room:1") -> tuple[RawClient, dict]:
    """A client joined to ``topic``, and the ``presence_state`` it got."""
    client = await RawClient.connect(server_url, mint(user))
    await client.send(["1", "1", topic, "phx_join", {}])
    state = await client.recv_until(lambda f: f[3] == "presence_state")
    return client, state[4]


async def diff(client: RawClient, predicate) -> dict:
    frame = await client.recv_until(lambda f: f[3] == "presence_diff" and predicate(f[4]))
    return frame[4]


async def test_a_joiner_on_any_node_gets_the_whole_clusters_state(two_nodes, mint):
    a, b = two_nodes
    first, state = await member(a.url, mint, 1)
    assert set(state) == {"1"}
    second, state = await member(b.url, mint, 2)
    assert set(state) == {"1", "2"}
    joined = await diff(first, lambda d: "2" in d["joins"])
    assert joined["joins"]["2"]["metas"][0]["phx_ref"] == state["2"]["metas"][0]["phx_ref"]
    third, state = await member(a.url, mint, 3)
    assert set(state) == {"1", "2", "3"}
    await diff(second, lambda d: "3" in d["joins"])
    # A leave on one node is a leave on the other.
    await second.call(["1", "5", "room:1", "phx_leave", {}])
    left = await diff(first, lambda d: "2" in d["leaves"])
    assert left["joins"] == {}
    await diff(third, lambda d: "2" in d["leaves"])


async def test_several_sessions_of_one_user_on_two_nodes(two_nodes, mint):
    a, b = two_nodes
    on_a, _ = await member(a.url, mint, 7)
    on_b, state = await member(b.url, mint, 7)
    assert len(state["7"]["metas"]) == 2
    await on_b.close()
    left = await diff(on_a, lambda d: "7" in d["leaves"])
    assert len(left["leaves"]["7"]["metas"]) == 1


SCENARIO = r"""
const open = (url, token) => {
  const socket = new Socket(url, { transport: WebSocket, params: { token } });
  socket.connect();
  const channel = socket.channel("room:1");
  const presence = new Presence(channel);
  const client = { channel, presence, syncs: [] };
  presence.onSync(() => client.syncs.forEach((f) => f()));
  return client;
};
const norm = (c) => JSON.stringify(c.presence.list((key, p) => [key, p.metas.map((m) => m.phx_ref).sort()]).sort());
const settle = async (clients, want) => {
  const deadline = Date.now() + 8000;
  while (true) {
    const lists = clients.map(norm);
    const keys = JSON.parse(lists[0]).map(([k]) => k);
    if (lists.every((l) => l === lists[0]) && JSON.stringify(keys) === JSON.stringify(want)) return lists[0];
    if (Date.now() > deadline) throw new Error(`lists differ: ${lists}`);
    await new Promise((ok) => clients.forEach((c) => c.syncs.push(() => { clients.forEach((d) => (d.syncs = [])); ok(); })));
  }
};
const tokens = JSON.parse(env.TOKENS);
const clients = [open(env.URL_A, tokens[0]), open(env.URL_B, tokens[1]), open(env.URL_A, tokens[2]), open(env.URL_B, tokens[3])];
for (const c of clients) await until((ok) => c.channel.join().receive("ok", ok));
emit({ step: "joined", list: await settle(clients, ["1", "2", "3", "4"]) });
await until((ok) => clients[1].channel.leave().receive("ok", ok));
const rest = [clients[0], clients[2], clients[3]];
emit({ step: "left", list: await settle(rest, ["1", "3", "4"]) });
"""


@pytest.mark.node
async def test_phoenix_js_presence_lists_are_equal_across_nodes(two_nodes, mint):
    a, b = two_nodes
    tokens = [mint(n) for n in (1, 2, 3, 4)]
    import json

    lines = await run_js(SCENARIO, URL_A=a.url.removesuffix("/websocket"), URL_B=b.url.removesuffix("/websocket"),
                         TOKENS=json.dumps(tokens))
    assert [line["step"] for line in lines] == ["joined", "left"]


@pytest.fixture
def node_process(serve_process, redis_server, tmp_path):
    def start(node: str, down_after: str = "15s"):
        config = tmp_path / f"{node}.yaml"
        config.write_text(cluster_yaml(redis_server, node, f"  down_after: {down_after}\n"))
        return serve_process(config)

    return start


async def test_sigterm_a_node_and_its_presences_leave_everywhere_at_once(node_process, start_node, mint):
    doomed = node_process("doomed")
    async with start_node("stays") as stays:
        watcher, _ = await member(stays.url, mint, 1)
        gone = [await member(doomed.url, mint, n) for n in (2, 3)]
        state = await diff(watcher, lambda d: "3" in d["joins"])
        doomed.proc.send_signal(signal.SIGTERM)
        leaves: set[str] = set()
        async with asyncio.timeout(TIMEOUT):  # down_after is 15 s: only the bye can be this fast
            while leaves != {"2", "3"}:
                leaves |= set((await diff(watcher, lambda d: bool(d["leaves"])))["leaves"])
        assert await asyncio.to_thread(doomed.proc.wait, TIMEOUT) == 0  # the loop serves the drain meanwhile
        del state, gone


async def test_kill_9_a_node_and_its_presences_leave_within_down_after(node_process, start_node, mint):
    down_after = 2.0
    doomed = node_process("doomed", f"{down_after}s")
    async with start_node("stays", f"  down_after: {down_after}s\n") as stays:
        watcher, _ = await member(stays.url, mint, 1)
        victim, _ = await member(doomed.url, mint, 2)
        await diff(watcher, lambda d: "2" in d["joins"])
        killed = time.monotonic()
        os.kill(doomed.proc.pid, signal.SIGKILL)
        left = await asyncio.wait_for(diff(watcher, lambda d: "2" in d["leaves"]), down_after + TIMEOUT)
        took = time.monotonic() - killed
        assert left["leaves"]["2"]["metas"][0]["phx_ref"]
        # Silent for down_after since its last heartbeat, noticed within the next second.
        assert down_after * 2 / 3 - 0.5 <= took <= down_after + 1 + TIMEOUT / 5, took
        # A later joiner there does not see the dead node's presence.
        late, state = await member(stays.url, mint, 3)
        assert set(state) == {"1", "3"}
        await victim.close()


async def test_a_slow_presence_write_is_not_overtaken_by_a_later_one(two_nodes, mint, redis_server, monkeypatch):
    """Node a's writes of its part reach Redis in the order it made them, even when one is slow.

    Its client is a pool: a later pipeline on another connection could land first, and an older
    HDEL landing after a rejoin's HSET would hide the rejoined presence from every node that
    reads the hash afterwards (the rejoin's message went out before they subscribed)."""
    import redis.asyncio as aioredis

    a, b = two_nodes
    first, _ = await member(a.url, mint, 1)
    watcher, _ = await member(b.url, mint, 2)
    client = a.cluster.pubsub.redis
    await asyncio.gather(*(client.ping() for _ in range(4)))  # idle connections: no write waits to connect
    pipeline, gate = client.pipeline, "test:gate"

    def stalling(*args, **kwargs):
        """The next pipeline that deletes a part waits in Redis (BLPOP blocks only its connection)."""
        pipe = pipeline(*args, **kwargs)
        hdel = pipe.hdel

        def stalled_hdel(*keys):
            monkeypatch.setattr(client, "pipeline", pipeline)
            pipe.blpop([gate], 0)
            return hdel(*keys)

        monkeypatch.setattr(pipe, "hdel", stalled_hdel)
        return pipe

    monkeypatch.setattr(client, "pipeline", stalling)
    await first.call(["1", "5", "room:1", "phx_leave", {}])  # a's part is empty: its HDEL stalls
    await first.send(["6", "6", "room:1", "phx_join", {}])  # a's part has user 1 again, new phx_ref
    ref = (await first.recv_until(lambda f: f[3] == "presence_state"))[4]["1"]["metas"][0]["phx_ref"]
    tester = aioredis.Redis.from_url(redis_server.url)
    try:
        await tester.lpush(gate, "go")  # the stalled write goes on
    finally:
        await tester.aclose()
    await diff(watcher, lambda d: d["joins"].get("1", {}).get("metas", [{}])[0].get("phx_ref") == ref)
    # b reads the hash afresh once its last subscriber left and one joins again: user 1 is there.
    await watcher.call(["1", "7", "room:1", "phx_leave", {}])
    await watcher.send(["8", "8", "room:1", "phx_join", {}])
    state = (await watcher.recv_until(lambda f: f[3] == "presence_state"))[4]
    assert [m["phx_ref"] for m in state.get("1", {}).get("metas", [])] == [ref]


async def test_presences_come_back_after_redis_restarted(two_nodes, mint, redis_server):
    a, b = two_nodes
    first, _ = await member(a.url, mint, 1)
    second, _ = await member(b.url, mint, 2)
    redis_server.restart()  # every key is gone, and both nodes lose their connections
    for client in (first, second):
        await client.recv_until(lambda f: f[3] == "phx_error", timeout=3 * TIMEOUT)
    await first.send(["2", "2", "room:1", "phx_join", {}])  # what phoenix.js does after phx_error
    await first.recv_until(lambda f: f[3] == "presence_state")
    await second.send(["2", "2", "room:1", "phx_join", {}])
    state = await second.recv_until(lambda f: f[3] == "presence_state")
    # Across nodes presence is eventually consistent (as in Phoenix): user 1's rejoin on node a may
    # reach node b just after user 2's state was taken, and then arrives as a diff.
    listed = set(state[4])
    while listed != {"1", "2"}:
        listed |= set((await second.recv_until(lambda f: f[3] == "presence_diff"))[4]["joins"])
    await diff(first, lambda d: "2" in d["joins"])


async def test_nodes_that_declared_each_other_down_meet_again(start_node, mint, redis_server):
    """Redis away for longer than down_after: each node declares the other down (its presences
    leave); once Redis is back they are peers again and their presences come back everywhere
    (before, each ignored the other for good)."""
    extra = "  down_after: 1s\n"
    async with start_node("a", extra) as a, start_node("b", extra) as b:
        first, _ = await member(a.url, mint, 1)
        second, _ = await member(b.url, mint, 2)
        await diff(first, lambda d: "2" in d["joins"])
        redis_server.stop()
        await diff(first, lambda d: "2" in d["leaves"])
        await diff(second, lambda d: "1" in d["leaves"])
        redis_server.start()
        for client in (first, second):
            await client.recv_until(lambda f: f[3] == "phx_error", timeout=3 * TIMEOUT)
        await first.send(["2", "2", "room:1", "phx_join", {}])
        await first.recv_until(lambda f: f[3] == "presence_state")
        await second.send(["2", "2", "room:1", "phx_join", {}])
        listed = set((await second.recv_until(lambda f: f[3] == "presence_state"))[4])
        while listed != {"1", "2"}:
            listed |= set((await second.recv_until(lambda f: f[3] == "presence_diff"))[4]["joins"])
        await diff(first, lambda d: "2" in d["joins"])
        assert [n["status"] for n in a.cluster.nodes()] == ["up", "up"]
