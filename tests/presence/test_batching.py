"""Opt-in presence batching never lets a client's view drift (issue 9, PROTOCOL.md §11).

A property test: random joins (first joins and duplicate joins), leaves, presence updates,
disconnects and steps of the tracker's clock on one batched topic, over real sockets; once all is
quiet, every joined client's list, kept by chanctl's own client sync (phoenix.js
``Presence.syncState``/``syncDiff``), equals the server's ``list(topic)``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chanctl.client.presence import Presence
from chanctl.config.load import load_config_text
from chanctl.server.connection import Connection
from chanctl.server.runtime import ChannelServer, build_server
from chanctl.tokens import TokenSigner
from tests.support import SECRET, TIMEOUT, ManualClock, RawClient

WINDOW = 0.05
CONFIG = f"""
auth: {{secret: "${{CHANCTL_SECRET}}"}}
server: {{rate_limit: null}}
topics:
  "room:{{id}}":
    join: true
    presence: {{meta: {{typing: false{{pad}}}}, batch: {WINDOW}, max_updates: {{updates: 1000, per: 1s}}}}
    events:
      typing: {{schema: {{typing: {{type: boolean}}}}, do: presence}}
"""
TOPIC = "room:1"
SLOTS = 4
"""Client slots; slot ``i`` is user ``i % 3``, so that some keys have several sessions."""


class Session:
    """One raw client that keeps its presence list as phoenix.js does."""

    def __init__(self, raw: RawClient):
        self.raw = raw
        self.presence = Presence(TOPIC)
        self.joined = False
        self.join_ref: str | None = None
        self._refs = itertools.count(1)
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for text in self.raw.ws:
            join_ref, ref, _topic, event, payload = orjson.loads(text)
            if event == "phx_reply":
                self._replies.pop(ref).set_result(payload)
            elif event == "presence_diff" or (event == "presence_state" and join_ref == self.join_ref):
                self.presence.receive(event, payload)

    async def call(self, event: str, payload: Any = None, topic: str = TOPIC) -> Any:
        ref = str(next(self._refs))
        if event == "phx_join":
            self.join_ref = ref
            self.presence.reset()  # as phoenix.js: diffs wait for this join's state
        future = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        await self.raw.send([self.join_ref, ref, topic, event, {} if payload is None else payload])
        return await asyncio.wait_for(future, TIMEOUT)

    async def synced(self) -> None:
        """Every frame the server sent before now has been read (a heartbeat's reply comes after them)."""
        await self.call("heartbeat", topic="phoenix")

    async def close(self) -> None:
        await self.raw.close()
        await self._reader


def normal(presences: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
    """Keys and their metas (by phx_ref, with the field that changes), in a stable order."""
    return {key: sorted((m["phx_ref"], m["typing"]) for m in value["metas"]) for key, value in presences.items()}


async def server_is_done_with_closed_sockets(srv: ChannelServer, open_sockets: int) -> None:
    """A closed socket's leave runs when the server's handler for it ends; wait for that."""
    await asyncio.wait_for(srv.until_connections(open_sockets), TIMEOUT)


PAD = ', pad: "%s"' % ("x" * 20_000)
"""A meta field that makes every list larger than a WebSocket fragment: the list then goes to every
joiner of a window as one shared body between each joiner's own first and last fragments."""


async def play(ops: list[tuple[str, int]], pad: str = "") -> None:
    loaded = load_config_text(CONFIG.replace("{pad}", pad), "<test>", {"CHANCTL_SECRET": SECRET})
    signer = TokenSigner(SECRET)
    clock = ManualClock()
    async with build_server(loaded, host="127.0.0.1", port=0) as srv:
        srv.presence.clock = clock
        sessions: dict[int, Session] = {}
        typing = False
        for op, slot in ops:
            session = sessions.get(slot)
            if op == "tick":
                clock.advance(WINDOW * (slot + 1) / 2)
            elif op == "join":
                if session is None:
                    session = sessions[slot] = Session(await RawClient.connect(srv.url, signer.mint(slot % 3)))
                assert (await session.call("phx_join"))["status"] == "ok"
                session.joined = True
            elif session is None or not session.joined:
                continue
            elif op == "update":
                typing = not typing
                assert (await session.call("typing", {"typing": typing}))["status"] == "ok"
            elif op == "leave":
                assert (await session.call("phx_leave"))["status"] == "ok"
                session.joined = False
            else:  # disconnect
                await sessions.pop(slot).close()
        # Quiet: the server has seen every close, the last window has ended, every frame is read.
        await server_is_done_with_closed_sockets(srv, len(sessions))
        clock.advance(WINDOW)
        for session in sessions.values():
            await session.synced()
        expected = normal(srv.presence.list(TOPIC))
        for slot, session in sessions.items():
            if session.joined:
                assert normal(session.presence.list()) == expected, f"slot {slot} drifted"
        for session in sessions.values():
            await session.close()


operations = st.lists(
    st.tuples(st.sampled_from(["join", "join", "update", "update", "leave", "disconnect", "tick", "tick"]), st.integers(0, SLOTS - 1)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_with_batching_every_clients_list_ends_equal_to_the_servers(ops: list[tuple[str, int]]) -> None:
    asyncio.run(play(ops))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_lists_sent_as_a_shared_body_end_equal_to_the_servers_too(ops: list[tuple[str, int]]) -> None:
    asyncio.run(play(ops, PAD))


async def test_the_joiners_of_a_window_share_one_copy_of_a_large_list(monkeypatch) -> None:
    loaded = load_config_text(CONFIG.replace("{pad}", PAD), "<test>", {"CHANCTL_SECRET": SECRET})
    signer = TokenSigner(SECRET)
    delivered: dict[int, list[bytes]] = {}

    def deliver(connection: Connection, frame: bytes) -> None:
        delivered.setdefault(connection.user["id"], []).append(frame)
        real_deliver(connection, frame)

    real_deliver = Connection.deliver
    monkeypatch.setattr(Connection, "deliver", deliver)
    async with build_server(loaded, host="127.0.0.1", port=0) as srv:
        srv.presence.clock = ManualClock()
        sessions = [Session(await RawClient.connect(srv.url, signer.mint(user), max_size=None)) for user in (1, 2, 3)]
        for session in sessions:  # the first opens a window; the other two join inside it
            assert (await session.call("phx_join"))["status"] == "ok"
        large = [{id(frame): frame for frame in delivered[user] if len(frame) > 20_000} for user in (2, 3)]
        assert set(large[0]) & set(large[1])  # the same bytes object in both joiners' frames
        srv.presence.clock.advance(WINDOW)
        for session in sessions:
            await session.synced()
            assert normal(session.presence.list()) == normal(srv.presence.list(TOPIC))
        for session in sessions:
            await session.close()
