"""Random and mutated frames at one connection while another chats: the server lives, nothing is lost."""

from __future__ import annotations

import itertools
import json

import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import TIMEOUT, RawClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
refs = st.none() | st.sampled_from(["1", "2", "99", ""]) | st.text(max_size=5)
topics = st.sampled_from(["room:lobby", "room:fuzz", "phoenix", "nope:1", "room:" + "x" * 300]) | st.text(max_size=12)
events = st.sampled_from(["phx_join", "phx_leave", "heartbeat", "ping", "shout", "boom", "bin", "kick", "phx_reply"]) | st.text(max_size=10)
valid_frames = st.tuples(refs, refs, topics, events, json_values).map(list)


def mutate(frame: list, index: int, value: object) -> list:
    mutated = list(frame)
    if index < len(mutated):
        mutated[index] = value
    else:
        mutated.append(value)
    return mutated


mutated_frames = st.builds(mutate, valid_frames, st.integers(0, 6), json_values)
binary_pushes = st.builds(
    lambda j, r, t, e, p: bytes([0, len(j), len(r), len(t), len(e)]) + j + r + t + e + p,
    st.binary(max_size=4), st.binary(max_size=4), st.sampled_from([b"room:lobby", b"room:fuzz"]) | st.binary(max_size=12),
    st.sampled_from([b"bin", b"ping", b"shout"]) | st.binary(max_size=6), st.binary(max_size=16),
)
frames = st.one_of(
    valid_frames.map(json.dumps),
    mutated_frames.map(json.dumps),
    st.text(max_size=40),
    st.binary(max_size=40),
    binary_pushes,
    st.just("[" + " " * 5000 + "]"),  # over the fixture's 4KiB frame limit
)

seq = itertools.count()


def from_ann(frame: list) -> bool:
    return frame[3] == "shout" and isinstance(frame[4], dict) and frame[4].get("from") == "ann"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attack=st.lists(frames, min_size=1, max_size=8))
async def test_fuzzed_frames_never_hurt_another_connection(server, mint, attack):
    async with await RawClient.connect(server.url, mint(7)) as ann, await RawClient.connect(server.url, mint(8)) as bob:
        await ann.call(["1", "1", "room:lobby", "phx_join", {}])
        await bob.call(["1", "1", "room:lobby", "phx_join", {}])
        fuzzer = await RawClient.connect(server.url, mint(666))
        try:
            for frame in attack:
                await fuzzer.ws.send(frame)
                n = next(seq)
                await ann.send(["1", str(n), "room:lobby", "shout", {"from": "ann", "n": n}])
                # Bob gets every shout of Ann, in order, whatever the fuzzer did (or shouted) meanwhile.
                got = await bob.recv_until(from_ann, TIMEOUT)
                assert got == [None, None, "room:lobby", "shout", {"from": "ann", "n": n}]
        except websockets.ConnectionClosed as exc:
            # Only the fuzzer's own connection may be closed, and only with a code that says why.
            assert exc.rcvd is None or exc.rcvd.code in (1001, 1007, 1009, 1011), exc
        finally:
            await fuzzer.close()
        assert (await ann.call([None, "hb", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
