"""Presence on a real server over raw frames: PROTOCOL.md §10 items 38-41, every kind of leave,
the handler API, batching, count mode and the update cap."""

import asyncio

import pytest
import websockets

from chanctl.channel import Channel, ok
from chanctl.config.load import load_config_text
from chanctl.errors import ConfigError
from chanctl.server.compile import compile_config
from chanctl.protocol.router import Router
from chanctl.server.runtime import build_server
from tests.support import SECRET, TIMEOUT, ManualClock, RawClient

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {idle_timeout: %(idle)s}
topics:
  "room:{id}":
    join: true
    presence: {meta: {typing: false}, %(batch)smode: %(mode)s, max_updates: {updates: 3, per: 60s}}
    events:
      typing: {schema: {typing: {type: boolean}}, do: presence}
      status: {do: presence}
  "plain:{id}":
    join: true
"""


def server(make_server, batch=None, mode="list", idle="60s"):
    """A server with presence on ``room:{id}``; ``batch=None`` keeps the default (Phoenix's: no batching)."""
    return make_server(CONFIG % {"batch": "" if batch is None else f"batch: {batch}, ", "mode": mode, "idle": idle})


async def join(c, topic="room:1", j="1", params=None):
    """Join and return (reply, the frames that follow up to and including presence_state)."""
    await c.send([j, j, topic, "phx_join", params or {}])
    frames = [await c.recv()]
    while frames[-1][3] != "presence_state":
        frames.append(await c.recv())
    return frames


def diff_of(frame):
    assert frame[:4] == [None, None, frame[2], "presence_diff"], frame
    return frame[4]


def only_meta(presences, key):
    (meta,) = presences[key]["metas"]
    return meta


async def test_presence_is_tracked_on_join_in_phoenix_order(make_server, mint):
    """The seed's test (§10 item 38): reply, then the diff to every member, then the joiner's state."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(7)) as a:
        reply, diff, state = await join(a, j="3")
        assert reply == ["3", "3", "room:1", "phx_reply", {"status": "ok", "response": {}}]
        meta = only_meta(diff_of(diff)["joins"], "7")
        assert diff_of(diff) == {"joins": {"7": {"metas": [meta]}}, "leaves": {}}
        assert set(meta) == {"typing", "online_at", "phx_ref"} and meta["typing"] is False
        assert isinstance(meta["online_at"], int) and len(meta["phx_ref"]) == 16
        assert state == ["3", None, "room:1", "presence_state", {"7": {"metas": [meta]}}]
        assert srv.presence.list("room:1") == state[4]


async def test_38_40_41_in_phoenix_order_with_the_defaults_at_full_speed(make_server, mint):
    """Issue 9: with the default presence config, a raw client that joins, pushes and leaves back to
    back sees Phoenix's frames, each right after the reply that caused it; nobody waits for a window."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(7)) as a, await RawClient.connect(srv.url, mint(8)) as b:
        await a.send(["1", "1", "room:1", "phx_join", {}])
        await b.send(["1", "1", "room:1", "phx_join", {}])
        reply, diff, state = [await a.recv() for _ in range(3)]  # 38: A's own join
        assert [reply[3], state[0], state[1], state[3]] == ["phx_reply", "1", None, "presence_state"]
        p = only_meta(diff_of(diff)["joins"], "7")
        assert diff_of(diff) == {"joins": {"7": {"metas": [p]}}, "leaves": {}} and state[4]["7"] == {"metas": [p]}
        b_reply, b_diff, b_state = [await b.recv() for _ in range(3)]  # 38 for B; A gets B's diff too
        assert [b_reply[3], b_diff[3], b_state[3]] == ["phx_reply", "presence_diff", "presence_state"]
        assert set(diff_of(b_diff)["joins"]) == {"8"} and set(b_state[4]) == {"7", "8"}
        assert diff_of(await a.recv()) == diff_of(b_diff)
        assert (await a.call(["1", "2", "room:1", "typing", {"typing": True}]))[4]["status"] == "ok"  # 40
        for c in (a, b):
            update = diff_of(await c.recv())
            p2 = only_meta(update["joins"], "7")
            assert p2["phx_ref_prev"] == p["phx_ref"] and p2["typing"] is True
            assert update == {"joins": {"7": {"metas": [p2]}}, "leaves": {"7": {"metas": [p]}}}
        await a.send(["1", "3", "room:1", "phx_leave", {}])  # 41
        assert diff_of(await b.recv()) == {"joins": {}, "leaves": {"7": {"metas": [p2]}}}
        assert set(srv.presence.list("room:1")) == {"8"}


async def test_second_session_of_a_key_is_a_second_meta(make_server, mint):
    """§10 item 39."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(7)) as a, await RawClient.connect(srv.url, mint(7)) as b:
        _, _, state_a = await join(a)
        first = only_meta(state_a[4], "7")
        _, diff, state_b = await join(b, j="9")
        second = only_meta(diff_of(diff)["joins"], "7")
        assert second["phx_ref"] != first["phx_ref"]
        assert state_b[4] == {"7": {"metas": [first, second]}}
        assert diff_of(await a.recv()) == diff_of(diff)
        assert srv.presence.list("room:1") == state_b[4]


async def test_update_through_the_presence_behaviour(make_server, mint):
    """§10 item 40 and the transcript's typing: leaves the old meta, joins the new with phx_ref_prev."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(1)) as a, await RawClient.connect(srv.url, mint(2)) as b:
        _, _, state = await join(a)
        old = only_meta(state[4], "1")
        await join(b)
        await a.recv()  # b's join
        reply = await a.call(["1", "5", "room:1", "typing", {"typing": True}])
        assert reply == ["1", "5", "room:1", "phx_reply", {"status": "ok", "response": {}}]
        new = {**old, "typing": True, "phx_ref": pytest.approx, "phx_ref_prev": old["phx_ref"]}
        for c in (a, b):
            diff = diff_of(await c.recv())
            new["phx_ref"] = only_meta(diff["joins"], "1")["phx_ref"]
            assert diff == {"joins": {"1": {"metas": [new]}}, "leaves": {"1": {"metas": [old]}}}
        assert srv.presence.list("room:1")["1"] == {"metas": [new]}


async def test_presence_behaviour_accepts_only_declared_fields(make_server, mint):
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        await join(a)
        bad = await a.call(["1", "2", "room:1", "status", {"typing": True, "phx_ref": "x", "avatar": "big"}])
        assert bad[4] == {"status": "error", "response": {"errors": {
            "avatar": ["is not a presence field of this topic"], "phx_ref": ["is not a presence field of this topic"]}}}
        assert (await a.call(["1", "3", "room:1", "status", "away"]))[4]["status"] == "error"
        assert (await a.call(["1", "4", "room:1", "typing", {"typing": "yes"}]))[4]["status"] == "error"
        await a.nothing()
        assert only_meta(srv.presence.list("room:1"), "1")["typing"] is False


async def leave_seen_by_other(srv, mint, act, **join_params):
    """Join a and b; run ``act(a)``; return the diff b sees."""
    async with await RawClient.connect(srv.url, mint(1)) as a, await RawClient.connect(srv.url, mint(2)) as b:
        _, _, state = await join(a)
        await join(b)
        meta = only_meta(srv.presence.list("room:1"), "1")
        await act(srv, a)
        diff = diff_of(await b.recv())
        assert diff == {"joins": {}, "leaves": {"1": {"metas": [meta]}}}
        assert set(srv.presence.list("room:1")) == {"2"}
        return diff


async def test_phx_leave_untracks(make_server, mint):
    async def leave(srv, a):
        await a.call(["1", "9", "room:1", "phx_leave", {}])
        assert await a.recv() == ["1", "1", "room:1", "phx_close", {}]
        await a.nothing()  # the leaver is unsubscribed before its leave goes out
    async with server(make_server) as srv:
        await leave_seen_by_other(srv, mint, leave)


async def test_disconnect_untracks(make_server, mint):
    """§10 item 27."""
    async def close(srv, a):
        await a.close()
    async with server(make_server) as srv:
        await leave_seen_by_other(srv, mint, close)


async def test_forced_disconnect_untracks(make_server, mint):
    """``server.disconnect(socket id)`` (PROTOCOL.md §4, what the admin's disconnect does): 1001, and a leave."""
    async def force(srv, a):
        assert srv.disconnect("user_socket:1") == 1
        with pytest.raises(websockets.ConnectionClosed) as info:
            await a.recv_until(lambda frame: False)
        assert info.value.rcvd.code == 1001
    async with server(make_server) as srv:
        await leave_seen_by_other(srv, mint, force)


async def test_idle_timeout_untracks(make_server, mint):
    async def idle(srv, a):
        with pytest.raises(websockets.ConnectionClosed) as info:
            await a.recv_until(lambda frame: False)
        assert info.value.rcvd.code == 1001
    async with server(make_server, idle="1s") as srv:
        # b stays alive by its heartbeats while a goes quiet.
        async with await RawClient.connect(srv.url, mint(1)) as a, await RawClient.connect(srv.url, mint(2)) as b:
            await join(a)
            await join(b)
            meta = only_meta(srv.presence.list("room:1"), "1")
            a_closed = asyncio.ensure_future(idle(srv, a))
            async with asyncio.timeout(TIMEOUT):
                while True:
                    try:
                        frame = await b.recv(0.2)
                    except TimeoutError:
                        await b.send([None, "hb", "phoenix", "heartbeat", {}])
                        continue
                    if frame[3] == "presence_diff":
                        break
            assert diff_of(frame) == {"joins": {}, "leaves": {"1": {"metas": [meta]}}}
            await a_closed


async def test_duplicate_join_replaces_the_presence(make_server, mint):
    """Phoenix's transcript item 7: new reply, old phx_close, then the new presence; members see the swap."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(1)) as a, await RawClient.connect(srv.url, mint(2)) as b:
        await join(a)
        await join(b)
        await a.recv()  # b's join
        old = only_meta(srv.presence.list("room:1"), "1")
        frames = await join(a, j="5")
        assert [f[3] for f in frames] == ["phx_reply", "phx_close", "presence_diff", "presence_state"]
        new = only_meta(frames[3][4], "1")
        assert new["phx_ref"] != old["phx_ref"] and frames[3][0] == "5"
        seen = diff_of(await b.recv())
        assert seen["leaves"] == {"1": {"metas": [old]}}
        seen.update(diff_of(await b.recv()) if not seen["joins"] else {})
        assert seen["joins"] == {"1": {"metas": [new]}}
        assert srv.presence.list("room:1")["1"] == {"metas": [new]}


class Tracking(Channel):
    """A handler that exercises the presence API from handle_in."""

    async def handle_in(self, event, payload):
        if event == "track":
            return ok({"ref": self.track(payload["key"], payload.get("meta", {}))})
        if event == "update":
            return ok({"ref": self.update(payload["key"], lambda m: {**m, **payload["meta"]})})
        if event == "untrack":
            self.untrack(payload.get("key"))
            return ok()
        if event == "list":
            return ok(self.presence_list())
        if event == "boom":
            raise RuntimeError("boom")
        return await super().handle_in(event, payload)


@pytest.fixture
def handler_server(make_server):
    def make(batch=None):
        srv = server(make_server, batch=batch)
        srv.router = Router()
        srv.router.add("room:{id}", Tracking)
        srv.router.add("plain:{id}", Tracking)
        return srv
    return make


async def test_handler_api_track_update_untrack_list(handler_server, mint):
    async with handler_server() as srv, await RawClient.connect(srv.url, mint(7)) as a:
        await join(a)  # the topic's presence: tracked "7" on join
        ref = (await a.call(["1", "2", "room:1", "track", {"key": "bot", "meta": {"kind": "bot"}}]))[4]["response"]["ref"]
        assert diff_of(await a.recv())["joins"] == {"bot": {"metas": [{"kind": "bot", "phx_ref": ref}]}}
        new = (await a.call(["1", "3", "room:1", "update", {"key": "bot", "meta": {"kind": "robot"}}]))[4]["response"]["ref"]
        diff = diff_of(await a.recv())
        assert diff["joins"] == {"bot": {"metas": [{"kind": "robot", "phx_ref": new, "phx_ref_prev": ref}]}}
        assert diff["leaves"] == {"bot": {"metas": [{"kind": "bot", "phx_ref": ref}]}}
        listed = (await a.call(["1", "4", "room:1", "list", {}]))[4]["response"]
        assert listed == srv.presence.list("room:1") and set(listed) == {"7", "bot"}
        await a.call(["1", "5", "room:1", "untrack", {"key": "bot"}])
        assert diff_of(await a.recv())["leaves"] == {"bot": {"metas": [{"kind": "robot", "phx_ref": new, "phx_ref_prev": ref}]}}
        assert set(srv.presence.list("room:1")) == {"7"}


async def test_handler_api_errors_are_error_replies(handler_server, mint):
    """§10 item 41: already_tracked and nopresence; the channel stays joined."""
    async with handler_server() as srv, await RawClient.connect(srv.url, mint(7)) as a:
        await join(a)
        again = await a.call(["1", "2", "room:1", "track", {"key": 7}])
        assert again[4] == {"status": "error", "response": {"reason": "already_tracked"}}
        missing = await a.call(["1", "3", "room:1", "update", {"key": "nobody", "meta": {}}])
        assert missing[4] == {"status": "error", "response": {"reason": "nopresence"}}
        assert (await a.call(["1", "4", "room:1", "untrack", {"key": "nobody"}]))[4]["status"] == "ok"
        assert set((await a.call(["1", "5", "room:1", "list", {}]))[4]["response"]) == {"7"}


async def test_handler_api_on_a_topic_without_presence_config(handler_server, mint):
    """No ``presence:``: nothing on join, but a handler may still track (diffs go out, no state push)."""
    async with handler_server() as srv, await RawClient.connect(srv.url, mint(7)) as a:
        assert (await a.call(["1", "1", "plain:1", "phx_join", {}]))[4]["status"] == "ok"
        await a.nothing()
        ref = (await a.call(["1", "2", "plain:1", "track", {"key": "k"}]))[4]["response"]["ref"]
        assert diff_of(await a.recv()) == {"joins": {"k": {"metas": [{"phx_ref": ref}]}}, "leaves": {}}
        assert srv.presence.list("plain:1") == {"k": {"metas": [{"phx_ref": ref}]}}


async def test_channel_crash_untracks(handler_server, mint):
    """A crash (§10 item 41): phx_error to the crasher, a leave to the others, with every key it tracked."""
    async with handler_server() as srv, await RawClient.connect(srv.url, mint(1)) as a, await RawClient.connect(srv.url, mint(2)) as b:
        await join(a)
        await a.call(["1", "2", "room:1", "track", {"key": "extra"}])
        await join(b)
        mine = {k: v for k, v in srv.presence.list("room:1").items() if k != "2"}
        await a.send(["1", "3", "room:1", "boom", {}])
        assert await a.recv_until(lambda f: f[3] == "phx_error") == ["1", "1", "room:1", "phx_error", {"reason": "channel_crash"}]
        diff = diff_of(await b.recv_until(lambda f: f[3] == "presence_diff" and f[4]["leaves"]))
        assert diff == {"joins": {}, "leaves": mine}
        assert set(srv.presence.list("room:1")) == {"2"}


async def test_update_cap_answers_with_an_error_reply(make_server, mint):
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        await join(a)
        replies = [(await a.call(["1", str(i), "room:1", "typing", {"typing": i % 2 == 0}]))[4] for i in range(5)]
        assert [r["status"] for r in replies] == ["ok", "ok", "ok", "error", "error"]
        assert replies[3]["response"] == {"reason": "too many presence updates"}
        assert srv.presence.stats.limited == 2
        assert (await a.call(["1", "9", "room:1", "phx_leave", {}]))[4]["status"] == "ok"  # still joined until it left
        await join(a, j="10")  # a rejoin does not refill the connection's allowance
        assert (await a.call(["10", "11", "room:1", "typing", {"typing": True}]))[4] == {
            "status": "error", "response": {"reason": "too many presence updates"}}


async def test_batched_joins_cost_one_diff_per_window(make_server, mint):
    """Opt-in batching, on the tracker's clock: ten joins inside one window each get their
    presence_state at once (the list as of the window's start, one encoding for all), then every
    member, the joiners included, gets one combined diff at the window's end."""
    clock = ManualClock()
    async with server(make_server, batch="1s") as srv:
        srv.presence.clock = clock
        first = await RawClient.connect(srv.url, mint(0))
        _, diff, state = await join(first)  # a quiet topic: the first change goes out at once
        assert set(diff_of(diff)["joins"]) == {"0"} and set(state[4]) == {"0"}
        others = [await RawClient.connect(srv.url, mint(i)) for i in range(1, 11)]
        for c in others:
            await c.send(["1", "1", "room:1", "phx_join", {}])
        for c in others:
            frames = [await c.recv(), await c.recv()]
            assert [f[3] for f in frames] == ["phx_reply", "presence_state"]
            assert frames[1][4] == state[4]  # the window's start; its diff brings the rest
        await asyncio.gather(*(c.nothing() for c in [first, *others]))
        clock.advance(1)
        everyone = {str(i) for i in range(11)}
        for c in [first, *others]:
            combined = diff_of(await c.recv())
            assert set(combined["joins"]) == everyone - {"0"} and combined["leaves"] == {}
        assert set(srv.presence.list("room:1")) == everyone
        assert srv.presence.stats.diffs == 2 and srv.presence.stats.states == 11
        for c in [first, *others]:
            await c.close()


async def test_a_batched_joiner_gets_its_state_before_the_reply_to_its_next_push(make_server, mint):
    """Issue 9's raw-frame client: joining inside a window, the state comes right after the join
    reply, not after the reply to the next push (nor only when the window ends)."""
    clock = ManualClock()
    async with server(make_server, batch="50ms") as srv, await RawClient.connect(srv.url, mint(1)) as a:
        srv.presence.clock = clock
        async with await RawClient.connect(srv.url, mint(2)) as b:
            await join(b)
            frames = await join(a)
            assert [f[3] for f in frames] == ["phx_reply", "presence_state"]
            reply = await a.call(["1", "2", "room:1", "typing", {"typing": True}])
            assert reply[4]["status"] == "ok"
            await a.nothing()
            clock.advance(0.05)
            diff = diff_of(await a.recv())
            assert set(diff["joins"]) == {"1"}  # its own join (its update folded in) and nothing else


async def test_count_mode_sends_occupancy_not_members(make_server, mint):
    async with server(make_server, mode="count") as srv:
        async with await RawClient.connect(srv.url, mint(1)) as a, await RawClient.connect(srv.url, mint(1)) as a2:
            await a.call(["1", "1", "room:1", "phx_join", {}])
            assert await a.recv() == [None, None, "room:1", "presence_count", {"count": 1, "sessions": 1}]
            await a2.call(["1", "1", "room:1", "phx_join", {}])
            for c in (a, a2):
                assert await c.recv() == [None, None, "room:1", "presence_count", {"count": 1, "sessions": 2}]
            assert srv.presence.count("room:1") == {"count": 1, "sessions": 2}
            assert set(srv.presence.list("room:1")) == {"1"}  # the server still knows who


async def test_key_expression_reads_join_params(make_server, mint):
    text = (CONFIG % {"batch": "", "mode": "list", "idle": "60s"}).replace(
        "presence: {meta", "presence: {key: 'string(user.id) + \"/\" + params.device', meta")
    async with make_server(text) as srv, await RawClient.connect(srv.url, mint(7)) as a:
        _, _, state = await join(a, params={"device": "phone"})
        assert set(state[4]) == {"7/phone"}
        # A key that cannot be computed: joined, not tracked, and the server says why in its log.
        async with await RawClient.connect(srv.url, mint(8)) as b:
            reply, state = await join(b)
            assert reply[4]["status"] == "ok" and set(state[4]) == {"7/phone"}


@pytest.mark.parametrize(
    "presence, events, message",
    [
        ("{key: 'user.id +'}", "{}", "topics.room:{id}.presence.key: bad presence key expression"),
        ("{key: 'who.id'}", "{}", "unknown variable 'who'"),
        ("{mode: all}", "{}", "topics.room:{id}.presence.mode: Input should be 'list' or 'count'"),
        ("false", "{typing: {do: presence}}", "event 'typing' does `do: presence`, but the topic has no `presence:`"),
        ("{batch: soon}", "{}", "topics.room:{id}.presence.batch: not a duration"),
    ],
)
def test_presence_config_errors_are_located(presence, events, message):
    text = f"""auth: {{secret: {SECRET}}}
topics:
  "room:{{id}}":
    join: true
    presence: {presence}
    events: {events}
"""
    with pytest.raises(ConfigError) as info:
        compile_config(load_config_text(text, "x.yaml"))
    assert message in str(info.value) and "x.yaml:" in str(info.value)


def test_presence_true_means_the_defaults():
    loaded = load_config_text(f"auth: {{secret: {SECRET}}}\ntopics: {{lobby: {{join: true, presence: true}}}}")
    presence = loaded.config.topics["lobby"].presence
    assert presence is not None and presence.key == "user.id" and presence.mode == "list" and presence.batch == 0
    assert build_server(loaded).presence.list("lobby") == {}


async def test_another_nodes_part_reaches_local_members_and_leaves_when_it_is_down(make_server, mint):
    """Nothing assumes one process: a peer's part merges into the list and its changes are diffs here."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(1)) as a:
        await join(a)
        remote = {("c9", "9"): {"online_at": 1, "phx_ref": "REMOTE1"}}
        srv.presence.replace_part("room:1", "node-b", remote)
        assert diff_of(await a.recv()) == {"joins": {"9": {"metas": [{"online_at": 1, "phx_ref": "REMOTE1"}]}}, "leaves": {}}
        assert set(srv.presence.list("room:1")) == {"1", "9"}
        srv.presence.drop_node("node-b")
        assert diff_of(await a.recv()) == {"joins": {}, "leaves": {"9": {"metas": [{"online_at": 1, "phx_ref": "REMOTE1"}]}}}
        assert set(srv.presence.list("room:1")) == {"1"}


async def test_presence_over_the_v1_serializer(make_server, mint):
    """The transcript's V1 socket: object frames, presence_diff then presence_state, no join_ref."""
    async with server(make_server) as srv, await RawClient.connect(srv.url, mint(4), vsn="1.0.0") as a:
        await a.send({"topic": "room:7", "event": "phx_join", "payload": {}, "ref": "1", "join_ref": "1"})
        reply, diff, state = [await a.recv() for _ in range(3)]
        assert reply == {"topic": "room:7", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "1"}
        meta = only_meta(diff["payload"]["joins"], "4")
        assert diff == {"topic": "room:7", "event": "presence_diff", "payload": {"joins": {"4": {"metas": [meta]}}, "leaves": {}}, "ref": None}
        assert state == {"topic": "room:7", "event": "presence_state", "payload": {"4": {"metas": [meta]}}, "ref": None}
