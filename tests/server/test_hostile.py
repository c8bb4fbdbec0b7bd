"""Hostile clients cannot hurt anyone else (issue 16): the threat model, one test per finding.

The attacker holds a valid token (any user may) and a `join: true` topic, as in `chanctl init`'s
starter. What they must not be able to do, and what stops them:

- grow server memory without bound: names, join payloads and connections have named, finite
  limits; nothing of a closed connection stays reachable; rule caches are bounded in size and key;
- hold the event loop: a rule the CEL library evaluates reads at most server.max_library_input values;
- silence the admin plane: every string it carries is shortened, its snapshot is capped;
- forge what an operator reads: every client string is escaped before a log line;
- fill the server's log: a kind of line a client's messages cause is written at most 10 times a minute;
- make the server log tracebacks without a token: the front door answers one HTTP request per
  connection and drops (and counts) what is pipelined behind it.

Each test drives real sockets on 127.0.0.1 and failed before its fix.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import sys
import weakref

import pytest
import websockets

from chanctl.channel import Channel, ok
from chanctl.server.metrics import render_metrics
from chanctl.server import runtime
from chanctl.server.runtime import ChannelServer
from tests.support import TIMEOUT, RawClient, closed_with

OPEN = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {%(server)s}
topics:
  "room:{id}":
    join: true
    presence: true
"""


def config(**server: object) -> str:
    return OPEN % {"server": ", ".join(f"{key}: {value}" for key, value in server.items())}


def refusals(server) -> str:
    return "\n".join(line for line in render_metrics(server)[0].decode().splitlines() if line.startswith("chanctl_limit_refusals"))


# -- finite by default, named in the refusal, counted in /metrics --------------------------------


async def test_a_900_kb_topic_name_is_refused_at_the_door(make_server, mint):
    """Five channels with 900 KB topic names made every admin join fail (slow consumer)."""
    async with make_server(config(max_frame_size="2MiB")) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        topic = "room:" + "x" * 900_000
        reply = await a.call(["1", "1", topic, "phx_join", {}])
        assert reply[4] == {"status": "error", "response": {"reason": "name too long", "limit": "server.max_name_length", "max": 255}}
        assert srv.pubsub.topics() == {} and srv.presence.topics() == {}
        assert 'chanctl_limit_refusals_total{limit="server.max_name_length"} 1.0' in refusals(srv)


async def test_a_big_join_payload_is_refused_with_the_limit_named(make_server, mint):
    async with make_server(config()) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        reply = await a.call(["1", "1", "room:1", "phx_join", {"pad": [{}] * 30_000}])  # 90 KB of {}
        assert reply[4]["response"] == {"reason": "join payload too large", "limit": "server.max_join_payload", "max": 65536}
        assert (await a.call(["2", "2", "room:1", "phx_join", {"pad": [{}] * 1_000}]))[4]["status"] == "ok"


async def test_a_rejoin_refused_for_its_size_keeps_the_joined_channel_and_leaves_no_ghost(make_server, mint):
    """Found by benchmarks/fuzz.py: a duplicate join over max_join_payload dropped the joined channel
    from the socket's table without leaving it, so its subscription and presence outlived the socket:
    a ghost member for everyone else, and the closed connection pinned by the pubsub."""
    async with make_server(config()) as srv, await RawClient.connect(srv.url, mint(2)) as b:
        a = await RawClient.connect(srv.url, mint(1))
        await a.call(["1", "1", "room:1", "phx_join", {}])
        await b.call(["1", "1", "room:1", "phx_join", {}])
        reply = await a.call(["3", "3", "room:1", "phx_join", {"pad": "x" * 70_000}])
        assert reply[4]["response"]["limit"] == "server.max_join_payload"
        await a.close()
        diff = await b.recv_until(lambda f: f[3] == "presence_diff" and f[4]["leaves"])
        assert list(diff[4]["leaves"]) == ["1"]
        await asyncio.wait_for(srv.until_connections(1), TIMEOUT)
        assert srv.pubsub.topics() == {"room:1": 1}


@pytest.mark.parametrize("setting, whose, same_user", [
    ("max_connections_per_user", "for this user", True),
    ("max_connections_per_address", "from this address", False),
    ("max_connections", "in all", False),
])
async def test_connections_past_a_limit_are_closed_at_once_with_the_setting_named(make_server, mint, setting, whose, same_user):
    async with make_server(config(**{setting: 2})) as srv:
        first = [await RawClient.connect(srv.url, mint(7 if same_user else n)) for n in range(2)]
        extra = await RawClient.connect(srv.url, mint(7 if same_user else 9))
        close = await closed_with(extra)
        assert (close.code, close.reason) == (1013, f"too many connections {whose} (server.{setting}: 2)")
        assert srv.stats.over_limit == {f"server.{setting}": 1}
        assert f'chanctl_limit_refusals_total{{limit="server.{setting}"}} 1.0' in refusals(srv)
        # A connection that ends gives its place back.
        await first[0].close()
        await asyncio.wait_for(srv.until_connections(1), TIMEOUT)  # freed when its handler has finished
        async with await RawClient.connect(srv.url, mint(7 if same_user else 9)) as again:
            assert (await again.call([None, "1", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
        await first[1].close()


async def test_a_ref_past_its_limit_is_counted_by_name(make_server, mint):
    """A ref over its bound closed the connection (1007, the limit named) but /metrics counted it
    only as a protocol violation: every limit refusal is in chanctl_limit_refusals_total."""
    async with make_server(config()) as srv:
        a = await RawClient.connect(srv.url, mint(1))
        await a.send(["1", "r" * 300, "room:1", "phx_join", {}])
        close = await closed_with(a)
        assert close.code == 1007 and "(server.max_ref_bytes)" in close.reason
        assert 'chanctl_limit_refusals_total{limit="server.max_ref_bytes"} 1.0' in refusals(srv)


async def test_the_ref_bound_is_a_setting(make_server, mint):
    """server.max_ref_bytes (was the constant MAX_REF_BYTES): a lower bound closes a ref the
    default accepts, naming the setting, on V2 and V1 alike."""
    async with make_server(config(max_ref_bytes=32)) as srv:
        async with await RawClient.connect(srv.url, mint(1)) as a:
            assert (await a.call([None, "r" * 32, "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
            await a.send([None, "r" * 33, "phoenix", "heartbeat", {}])
            close = await closed_with(a)
        assert (close.code, close.reason) == (1007, "ref is 33 bytes; a ref may have at most 32 (server.max_ref_bytes)")
        async with await RawClient.connect(srv.url, mint(2), vsn="1.0.0") as v1:
            await v1.send({"topic": "room:1", "event": "phx_join", "payload": {}, "ref": ["r" * 40]})
            close = await closed_with(v1)
        assert close.code == 1007 and "(server.max_ref_bytes)" in close.reason
        assert 'chanctl_limit_refusals_total{limit="server.max_ref_bytes"} 2.0' in refusals(srv)


async def test_a_frame_past_max_frame_size_is_counted_by_name(make_server, mint):
    """websockets closes a frame over max_frame_size with 1009 itself: counted under the setting."""
    async with make_server(config(max_frame_size="1KiB")) as srv:
        a = await RawClient.connect(srv.url, mint(1))
        await a.send(["1", "1", "room:1", "phx_join", {"pad": "x" * 2000}])
        assert (await closed_with(a)).code == 1009
        await asyncio.wait_for(srv.until_connections(0), TIMEOUT)  # counted as its handler ends
        assert 'chanctl_limit_refusals_total{limit="server.max_frame_size"} 1.0' in refusals(srv)


async def test_a_message_past_the_rate_limit_names_it_and_is_counted(make_server, mint):
    async with make_server(config(rate_limit="{per_second: 1, burst: 1}")) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        await a.call(["1", "1", "room:1", "phx_join", {}])  # the bucket's one message
        reply = await a.call(["1", "2", "room:1", "shout", {}])
        assert reply[4]["response"]["limit"] == "server.rate_limit"
        assert 'chanctl_limit_refusals_total{limit="server.rate_limit"} 1.0' in refusals(srv)


# -- nothing of a closed connection stays reachable ------------------------------------------------

HANDLED = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {idle_timeout: %s}
topics:
  "room:{id}": {join: true, presence: true, handler: "tests.server.test_hostile:Crashable"}
  "plain:{id}": {join: true, handler: "tests.server.test_hostile:Crashable"}
"""


class Crashable(Channel):
    """A handler that crashes on request."""

    async def handle_in(self, event: str, payload: object):
        if event.startswith("boom"):
            raise RuntimeError("boom on purpose")
        return ok()


async def ended(srv, client: RawClient, how: str, topic: str) -> None:
    if how == "leave":
        await client.call(["1", "2", topic, "phx_leave", {}])
    elif how == "crash":
        await client.send(["1", "2", topic, "boom", {}])
        await client.recv_until(lambda f: f[3] == "phx_error")
    elif how == "disconnect":
        await client.close()
    else:  # the idle timeout: the client just stops sending
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv_until(lambda frame: False)
    if how in ("disconnect", "idle"):
        await asyncio.wait_for(srv.until_connections(0), TIMEOUT)  # let go when its handler has finished


@pytest.mark.parametrize("topic", ["room:1", "plain:1"], ids=["presence", "no-presence"])
@pytest.mark.parametrize("how", ["leave", "crash", "disconnect", "idle"])
async def test_nothing_of_an_ended_channel_or_connection_stays_reachable(make_server, mint, monkeypatch, how, topic):
    """The presence tracker kept joiners (connection, channel, payload) in a list until 1,024 more came,
    and a connection's read loop kept its last action (a Leave) until the client's next message."""
    # pytest's log capture keeps each record, and a crash's record its traceback (the channel with it).
    monkeypatch.setattr(logging.getLogger("chanctl.connection"), "propagate", False)
    async with make_server(HANDLED % ("200ms" if how == "idle" else "60s")) as srv:
        client = await RawClient.connect(srv.url, mint(1))
        await client.call(["1", "1", topic, "phx_join", {"pad": "x" * 1000}])
        (connection,) = srv.connections
        channel = connection.proto.channels[topic]
        refs = [weakref.ref(channel), weakref.ref(channel.handler)]
        if how in ("disconnect", "idle"):
            refs.append(weakref.ref(connection))
        del connection, channel
        await ended(srv, client, how, topic)
        gc.collect()
        assert [ref() for ref in refs] == [None] * len(refs)
        await client.close()


JOIN_ONLY = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: size(params) < 100000
    events:
      new_msg: {do: broadcast}
"""


async def test_a_channel_does_not_keep_join_params_no_event_reads(make_server, mint):
    """A 60 KB join payload of [{}, {}, ...] is ~1 MB of Python objects; ten channels kept 10 MB."""
    async with make_server(JOIN_ONLY) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        gc.collect()
        before = sys.getallocatedblocks()
        for n in range(10):
            reply = await a.call([str(n), str(n), f"room:{n}", "phx_join", {"pad": [{}] * 15_000}])
            assert reply[4]["status"] == "ok"
        gc.collect()
        assert sys.getallocatedblocks() - before < 15_000  # kept, they were 150,000 dicts


async def test_a_channel_whose_event_rules_read_params_keeps_them(make_server, mint):
    text = JOIN_ONLY.replace("new_msg: {do: broadcast}", "new_msg: {do: broadcast, allow: params.role == 'host'}")
    async with make_server(text) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        await a.call(["1", "1", "room:1", "phx_join", {"role": "host"}])
        await a.call(["2", "2", "room:2", "phx_join", {"role": "guest"}])
        assert (await a.call(["1", "3", "room:1", "new_msg", {}]))[4]["status"] == "ok"
        assert (await a.call(["2", "4", "room:2", "new_msg", {}]))[4]["response"] == {"reason": "unauthorized"}


async def test_refused_joins_with_huge_params_are_not_remembered(make_server, mint):
    """A rule the CEL library evaluates remembered each decision keyed by its inputs, refusals too."""
    text = JOIN_ONLY.replace("join: size(params) < 100000", "join: params.ids.exists(i, i == 'ok')")
    async with make_server(text) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        for n in range(20):
            reply = await a.call([str(n), str(n), "room:1", "phx_join", {"ids": ["x" * 30_000 + str(n)]}])
            assert reply[4]["response"] == {"reason": "unauthorized"}
        rule = srv.router.match("room:1").target.join_rule
        assert len(rule._decisions) == 0


# -- the admin plane cannot be silenced ------------------------------------------------------------

ADMIN = "chanctl:admin"
PRESENCE_TYPING = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {max_frame_size: 4MiB, max_name_length: 1MiB, max_join_payload: 1MiB, outbound_buffer: 4MiB}
topics:
  "room:{id}":
    join: true
    presence: {meta: {typing: false}}
    events:
      typing: {do: presence}
"""


async def test_an_operator_can_watch_and_remove_a_user_holding_huge_topic_names(make_server, mint):
    """Five 900 KB topic names (limits raised by the operator) closed every admin join as a slow consumer."""
    # max_queue=None: an attacker that reads none of its 15 frames would stop reading its socket
    # (websockets' queue of 16), miss the server's close frame and wait 10 s to close.
    async with make_server(PRESENCE_TYPING) as srv, await RawClient.connect(srv.url, mint(66), max_size=None, max_queue=None) as attacker:
        for n in range(5):
            topic = f"room:{n}" + "x" * 900_000
            assert (await attacker.call([str(n), str(n), topic, "phx_join", {}]))[4]["status"] == "ok"
        async with await RawClient.connect(srv.url, mint(1, admin=True)) as admin:
            assert (await admin.call(["1", "1", ADMIN, "phx_join", {}]))[4]["status"] == "ok"
            snapshot = await admin.recv_until(lambda f: f[3] == "snapshot")
            assert all(len(topic) <= 101 for topic in snapshot[4]["topics"])
            (entry,) = [c for c in snapshot[4]["connections"] if c["user"] == 66]
            assert all(len(topic) <= 101 for topic in entry["topics"]) and entry["topics_total"] == 5
            reply = await admin.call(["1", "2", ADMIN, "disconnect", {"socket_id": "user_socket:66"}])
            assert reply[4] == {"status": "ok", "response": {"closed": 1}}


async def test_a_watcher_outlasts_a_user_with_full_length_names_and_huge_presence_metas(make_server, mint):
    """Presence diffs went into the traffic tail whole, and a tick's batch carried every one: a
    user updating 700 KB metas on 16 topics (255-byte names, the most JSON-escaping characters)
    made batches past the watcher's 4 MiB bound, which closed it as a slow consumer (1013), so the
    operator could not even `disconnect` the user. Now a diff's metas are cut past 4 KiB, a batch's
    presence past 256 KiB, and a watcher's own bound is sized for the admin plane's largest frames."""
    topics = [f"room:{n}" + "\x01" * (255 - len(f"room:{n}")) for n in range(16)]
    big = {"typing": "x" * 700_000}
    async with make_server(PRESENCE_TYPING) as srv, \
            await RawClient.connect(srv.url, mint(66), max_size=None, max_queue=None) as attacker, \
            await RawClient.connect(srv.url, mint(1, admin=True), max_size=None) as admin:
        assert (await admin.call(["1", "1", ADMIN, "phx_join", {}]))[4]["status"] == "ok"
        await admin.recv_until(lambda f: f[3] == "snapshot")
        for n, topic in enumerate(topics):
            assert (await attacker.call([str(n), str(n), topic, "phx_join", {}]))[4]["status"] == "ok"
        for n, topic in enumerate(topics):  # one at a time: the attacker's own diffs stay in its bound
            assert (await attacker.call([str(n), f"u{n}", topic, "typing", big]))[4]["status"] == "ok"
        cut = await admin.recv_until(lambda f: f[3] == "traffic" and any("cut_bytes" in p for p in f[4]["presence"]))
        (diff, *_) = [p for p in cut[4]["presence"] if "cut_bytes" in p]
        assert diff["joins"] == {"66": {"metas": [], "metas_cut": 1}} and diff["cut_bytes"] > 700_000
        inspected = await admin.call(["1", "2", ADMIN, "inspect", {"topic": topics[0]}])
        response = inspected[4]["response"]  # 700 KB of metas: past INSPECT_PRESENCE_BYTES, keys only
        assert response["presence"] == {"66": {"metas": [], "metas_cut": 1}} and response["presence_cut"]["keys"] == 1
        assert response["subscribers_total"] == 1 and response["subscribers"][0]["topics_total"] == 16
        reply = await admin.call(["1", "3", ADMIN, "disconnect", {"socket_id": "user_socket:66"}])
        assert reply[4] == {"status": "ok", "response": {"closed": 1}}
    assert srv.stats.slow_consumers == 0


async def test_a_watchers_bound_is_sized_for_admin_frames_not_for_a_clients(make_server, mint):
    """With a small ``outbound_buffer`` (32 KiB, for clients), one traffic batch of presence diffs
    each under the cut (3.5 KB metas on 18 topics; presence.max_updates allows 20) passed it and
    closed the watcher. A watcher's bound is ADMIN_OUTBOUND, sized for the admin plane's largest
    frames; clients keep theirs."""
    config = PRESENCE_TYPING.replace("outbound_buffer: 4MiB", "outbound_buffer: 32KiB")
    async with make_server(config) as srv, await RawClient.connect(srv.url, mint(66)) as attacker, \
            await RawClient.connect(srv.url, mint(1, admin=True), max_size=None) as admin:
        assert (await admin.call(["1", "1", ADMIN, "phx_join", {}]))[4]["status"] == "ok"
        await admin.recv_until(lambda f: f[3] == "snapshot")
        for n in range(18):
            assert (await attacker.call([str(n), str(n), f"room:{n}", "phx_join", {}]))[4]["status"] == "ok"
        for n in range(18):  # a few ms each: one or two traffic batches, each past 32 KiB
            assert (await attacker.call([str(n), f"u{n}", f"room:{n}", "typing", {"typing": "x" * 3500}]))[4]["status"] == "ok"
        batch = await admin.recv_until(lambda f: f[3] == "traffic" and any(p["leaves"] for p in f[4]["presence"]))
        assert "cut_bytes" not in batch[4]["presence"][-1]  # 3.5 KB metas go whole
        reply = await admin.call(["1", "2", ADMIN, "disconnect", {"socket_id": "user_socket:66"}])
        assert reply[4] == {"status": "ok", "response": {"closed": 1}}
    assert srv.stats.slow_consumers == 0


async def test_a_presence_value_nested_to_the_frame_limit_cannot_stop_the_feed_or_inspect(make_server, mint):
    """248 levels pass the frame limit; the admin envelope's extra levels made orjson fail: the feed
    task died silently, and `inspect` of that topic crashed the admin channel."""
    deep: object = 1
    for _ in range(248):
        deep = [deep]
    async with make_server(PRESENCE_TYPING) as srv, await RawClient.connect(srv.url, mint(66)) as attacker, \
            await RawClient.connect(srv.url, mint(1, admin=True)) as admin:
        assert (await admin.call(["1", "1", ADMIN, "phx_join", {}]))[4]["status"] == "ok"
        await admin.recv_until(lambda f: f[3] == "snapshot")
        await attacker.call(["1", "1", "room:1", "phx_join", {}])
        assert (await attacker.call(["1", "2", "room:1", "typing", {"typing": deep}]))[4]["status"] == "ok"
        traffic = await admin.recv_until(lambda f: f[3] == "traffic" and any(p["joins"] for p in f[4]["presence"]))
        assert traffic[4]["presence"][-1]["topic"] == "room:1"
        reply = await admin.call(["1", "3", ADMIN, "inspect", {"topic": "room:1"}])
        assert reply[4]["status"] == "ok" and set(reply[4]["response"]["presence"]) == {"66"}
        await attacker.call(["1", "4", "room:1", "new_msg", {}])  # the feed goes on after that tick
        await admin.recv_until(lambda f: f[3] == "stats")


LIBRARY_RULE = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {max_frame_size: 2MiB}
topics:
  "room:{id}":
    join: 'params.tags.all(t, size(t) < 20)'
    events:
      order: {allow: 'payload.items.all(i, i.n < 10)', do: reply}
"""
"""Rules with a macro (``all``), which only the CEL library evaluates: it converts what they read."""


async def test_a_library_rule_refuses_a_huge_payload_without_evaluating_it(make_server, mint, caplog):
    """A rule the CEL library evaluates over a 1 MiB payload of small objects cost 0.3-0.4 s of the
    event loop per message (every other client waited). Past server.max_library_input values it is not
    evaluated: the sender gets an error naming the limit; small inputs are evaluated as before."""
    caplog.set_level(logging.INFO, logger="chanctl")
    async with make_server(LIBRARY_RULE) as srv, await RawClient.connect(srv.url, mint(1), max_size=None) as a:
        assert (await a.call(["1", "1", "room:1", "phx_join", {"tags": ["a", "b"]}]))[4]["status"] == "ok"
        assert await a.call(["1", "2", "room:1", "order", {"items": [{"n": 1}] * 10}]) == [
            "1", "2", "room:1", "phx_reply", {"status": "ok", "response": {"items": [{"n": 1}] * 10}}]
        huge = {"items": [{"n": 1}] * 120_000}  # 960 KB
        refused = {"status": "error", "response": {
            "reason": "payload too large for this topic's rule", "limit": "server.max_library_input", "max": 2048}}
        assert (await a.call(["1", "3", "room:1", "order", huge]))[4] == refused
        # A join rule over params: the same bound (params are capped by max_join_payload too).
        tags = {"tags": ["x"] * 2049}
        assert (await a.call(["4", "4", "room:2", "phx_join", tags]))[4] == {
            "status": "error", "response": {**refused["response"], "reason": "params too large for this topic's rule"}}
        assert (await a.call(["1", "5", "room:1", "order", {"items": [{"n": 99}]}]))[4] == {
            "status": "error", "response": {"reason": "unauthorized"}}
        # Both refusals counted by the limit's name (the join rule's and the event rule's).
        assert 'chanctl_limit_refusals_total{limit="server.max_library_input"} 2.0' in refusals(srv)


async def test_the_rule_input_bound_is_a_setting(make_server, mint):
    """server.max_library_input (was the constant MAX_LIBRARY_INPUT): a lower bound refuses what the
    default evaluates, and the reply names the setting."""
    async with make_server(LIBRARY_RULE.replace("server: {max_frame_size: 2MiB}", "server: {max_library_input: 50}")) as srv, \
            await RawClient.connect(srv.url, mint(1)) as a:
        assert (await a.call(["1", "1", "room:1", "phx_join", {"tags": ["a"] * 40}]))[4]["status"] == "ok"
        assert (await a.call(["1", "2", "room:1", "order", {"items": [{"n": 1}] * 10}]))[4]["status"] == "ok"  # 32 values
        assert (await a.call(["1", "3", "room:1", "order", {"items": [{"n": 1}] * 30}]))[4] == {"status": "error", "response": {
            "reason": "payload too large for this topic's rule", "limit": "server.max_library_input", "max": 50}}
        assert 'chanctl_limit_refusals_total{limit="server.max_library_input"} 1.0' in refusals(srv)


# -- the front door: unauthenticated HTTP ---------------------------------------------------------

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
HEARTBEAT = b'[null,"1","phoenix","heartbeat",{}]'


def _upgrade(token: str) -> bytes:
    """A WebSocket upgrade request, as raw bytes."""
    return (f"GET /socket/websocket?vsn=2.0.0&token={token} HTTP/1.1\r\nHost: localhost\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def _masked(text: bytes) -> bytes:
    """One masked text frame (under 126 bytes), as a client sends it."""
    return bytes([0x81, 0x80 | len(text), 1, 2, 3, 4]) + bytes(b ^ (1, 2, 3, 4)[i % 4] for i, b in enumerate(text))


@pytest.mark.parametrize("longpoll", [False, True], ids=["websocket only", "longpoll on"])
async def test_two_pipelined_http_requests_get_one_answer_and_no_traceback(make_server, caplog, longpoll):
    """Two plain requests in one write made websockets parse the second as WebSocket frames, fail
    the connection, then trip its own assertion answering the first: an unauthenticated traceback
    in the log each time, and the first answer lost. Now the first is answered and the rest dropped
    (websockets answers one request per connection), counted."""
    caplog.set_level(logging.DEBUG)
    async with make_server(config(**({"longpoll": "{enabled: true}"} if longpoll else {}))) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(HEALTHZ * 2)
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)  # to the end: the server closes
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in answer
        assert answer.count(b"HTTP/1.1") == 1 and answer.endswith(b"}\n")
        assert "chanctl_http_pipelined_dropped_total 1.0" in render_metrics(srv)[0].decode()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def _upgraded_then_heartbeat_answered(reader: asyncio.StreamReader) -> None:
    """The 101, then the reply to the client's first frame, :data:`HEARTBEAT`."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 ")
    reply = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    body = await asyncio.wait_for(reader.readexactly(reply[1]), TIMEOUT)
    assert body == b'[null,"1","phoenix","phx_reply",{"status":"ok","response":{}}]'


async def test_frames_sent_right_behind_the_upgrade_request_still_arrive(make_server, mint):
    """What the front door holds back until the handshake is answered is the client's first frames
    after a 101: a heartbeat written in the same TCP write as the upgrade is answered."""
    async with make_server(config()) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(_upgrade(mint(1)) + _masked(HEARTBEAT))
        await _upgraded_then_heartbeat_answered(reader)
        writer.close()
        assert srv.stats.pipelined_dropped == 0


async def test_frames_read_after_the_upgrade_request_wait_for_the_answer(make_server, mint, monkeypatch):
    """A first frame that arrives in a read of its own, after the upgrade request's head and before
    the answer, is held (reading paused for it) and reaches websockets after the 101. (Reading is
    paused only once something is held: a client that waits for the answer costs no pause.) On
    websockets' path: the front door's fast path answers a plain upgrade within the read itself."""
    requested = asyncio.Event()
    process = ChannelServer._process_request
    monkeypatch.setattr(runtime, "read_upgrade", lambda head, path: None)

    async def answer_once_held(self, ws, request):
        paused, pause = asyncio.Event(), ws.transport.pause_reading

        def spy() -> None:
            pause()
            paused.set()

        ws.transport.pause_reading = spy
        requested.set()
        await paused.wait()  # the frame was read and held
        return process(self, ws, request)

    monkeypatch.setattr(ChannelServer, "_process_request", answer_once_held)
    async with make_server(config()) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(_upgrade(mint(1)))
        await asyncio.wait_for(requested.wait(), TIMEOUT)
        writer.write(_masked(HEARTBEAT))
        await _upgraded_then_heartbeat_answered(reader)
        writer.close()
        assert srv.stats.pipelined_dropped == 0


# -- escaped output ----------------------------------------------------------------------------------


async def test_client_strings_reach_the_server_log_escaped(make_server, mint, caplog):
    """A topic with a newline and ANSI escapes forged a second log line in a red colour."""
    caplog.set_level(logging.INFO, logger="chanctl")
    topic, event = "plain:1\nERROR \x1b[31mFAKE\u202e", "boom\x1b[2J"
    async with make_server(HANDLED % "60s") as srv, await RawClient.connect(srv.url, mint(1)) as a:
        assert (await a.call(["1", "1", topic, "phx_join", {}]))[4]["status"] == "ok"
        await a.send(["1", "2", topic, event, {}])
        await a.recv_until(lambda f: f[3] == "phx_error")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("channel crashed")]
    assert line == "channel crashed on plain:1\\x0aERROR \\x1b[31mFAKE\\u202e handling boom\\x1b[2J"


FAILING_RULE = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: true
    events:
      new_msg: {allow: "payload.level >= 2", do: broadcast}
"""


async def test_a_client_cannot_fill_the_log_with_one_line_per_message(make_server, mint, caplog):
    """A rule failing at run time (a field the client leaves out) logged one INFO line per message:
    the client decided how much the server wrote. Every message still gets its reply."""
    caplog.set_level(logging.INFO, logger="chanctl")
    async with make_server(FAILING_RULE) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        assert (await a.call(["1", "1", "room:1", "phx_join", {}]))[4]["status"] == "ok"
        for ref in range(2, 202):
            reply = await a.call(["1", str(ref), "room:1", "new_msg", {}])
            assert reply[4] == {"status": "error", "response": {"reason": "unauthorized"}}
    denials = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert 1 <= len(denials) <= 10, len(denials)


async def test_tokens_are_redacted_from_debug_logs(make_server, mint, caplog):
    """--log-level debug logged every request line and header: each socket's bearer token."""
    caplog.set_level(logging.DEBUG)
    token = mint(1)
    async with make_server(config()) as srv:
        async with await RawClient.connect(srv.url, token) as a:  # ?token=
            await a.call([None, "1", "phoenix", "heartbeat", {}])
        carried = "base64url.bearer.phx." + base64.b64encode(token.encode()).decode().rstrip("=")
        async with await RawClient.connect(srv.url, None, subprotocols=["phoenix", carried]) as b:  # phoenix.js authToken
            await b.call([None, "1", "phoenix", "heartbeat", {}])
    lines = [r.getMessage() for r in caplog.records if r.name == "websockets.server"]  # (the test clients log theirs)
    assert any("token=<redacted>" in line for line in lines) and any("phx.<redacted>" in line for line in lines)
    assert not any(token in line or carried in line for line in lines)


# -- smaller ---------------------------------------------------------------------------------------

SCHEMA = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {max_frame_size: 2MiB}
topics:
  "room:{id}":
    join: true
    events:
      new_msg: {schema: {body: {type: string, maxLength: 20}}, do: broadcast}
"""


async def test_the_schema_shorthand_allows_no_extra_fields_so_a_broadcast_carries_none(make_server, mint):
    """A new_msg limited to 20 characters still fanned out 900 KB beside them to every member."""
    async with make_server(SCHEMA) as srv, await RawClient.connect(srv.url, mint(1)) as a, \
            await RawClient.connect(srv.url, mint(2)) as b:
        for c in (a, b):
            await c.call(["1", "1", "room:1", "phx_join", {}])
        reply = await a.call(["1", "2", "room:1", "new_msg", {"body": "hi", "pad": "x" * 900_000}])
        assert reply[4] == {"status": "error", "response": {"errors": {"pad": ["is not allowed"]}}}
        await b.nothing()
