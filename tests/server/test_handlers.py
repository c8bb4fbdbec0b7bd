"""Python channel handlers: the lifecycle, the four directions, timers and server publishes, crashes."""

import asyncio
import logging

import pytest

from tests.server import handler_fixtures as fx
from tests.support import TIMEOUT, RawClient

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "game:{id}":
    join: topic.id != "closed"
    handler: tests.server.handler_fixtures:Lifecycle
"""


@pytest.fixture(autouse=True)
def fresh():
    fx.EVENTS.clear()
    fx.TIMERS.clear()
    fx.TERMINATED = asyncio.Queue()
    yield
    fx.TERMINATED = None


def reply(frame):
    return frame[4]["status"], frame[4]["response"]


async def terminated():
    return await asyncio.wait_for(fx.TERMINATED.get(), TIMEOUT)


async def test_join_handle_in_directions_assigns_and_terminate(make_server, mint):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(5)) as a, await RawClient.connect(server.url, mint(6)) as b:
            assert reply(await a.call(["1", "1", "game:1", "phx_join", {"x": 1}])) == ("ok", {"joins": 1, "user": 5, "id": "1"})
            assert reply(await a.call(["2", "2", "game:2", "phx_join", {}]))[1]["joins"] == 2  # assigns are per socket
            await b.call(["1", "1", "game:1", "phx_join", {}])
            assert reply(await a.call(["1", "3", "game:1", "echo", {"v": 1}])) == ("ok", {"v": 1})
            await a.send(["1", "4", "game:1", "push", {"p": 1}])
            assert await a.recv() == ["1", None, "game:1", "pushed", {"p": 1}]
            assert reply(await a.recv()) == ("ok", {})
            assert reply(await a.call(["1", "5", "game:1", "broadcast_from", {"s": 1}])) == ("ok", {})
            assert await b.recv() == [None, None, "game:1", "shout", {"s": 1}]
            assert reply(await a.call(["1", "6", "game:1", "broadcast", {"s": 2}])) == ("ok", {})
            assert await b.recv() == [None, None, "game:1", "shout", {"s": 2}]
            assert reply(await a.call(["1", "7", "game:1", "later", {"l": 1}])) == ("ok", {"later": {"l": 1}})
            assert reply(await a.call(["1", "8", "game:1", "phx_leave", {}])) == ("ok", {})
            assert await terminated() == ("game:1", "left")
            assert reply(await a.call(["3", "3", "game:closed", "phx_join", {}])) == ("error", {"reason": "unauthorized"})
    assert len([e for e in fx.EVENTS if e[0] == "join"]) == 3  # the YAML rule refused game:closed first


async def test_join_after_join_message_arrives_after_the_join_reply(make_server, mint):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(5)) as a:
            await a.send(["1", "1", "game:1", "phx_join", {"after_join": True}])
            assert reply(await a.recv())[0] == "ok"
            assert await a.recv() == ["1", None, "game:1", "welcome", {"joins": 1}]


async def test_a_crash_in_join_replies_join_crashed_and_logs_the_traceback(make_server, mint, caplog):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(5)) as a:
            with caplog.at_level(logging.ERROR):
                assert reply(await a.call(["1", "1", "game:1", "phx_join", {"crash": True}])) == ("error", {"reason": "join crashed"})
            # the socket lives on
            assert reply(await a.call(["2", "2", "game:1", "phx_join", {}]))[0] == "ok"
    record = next(r for r in caplog.records if "join crashed" in r.getMessage())
    assert record.exc_info and "boom in join" in str(record.exc_info[1])


async def test_a_crash_in_handle_in_sends_phx_error_and_terminates(make_server, mint, caplog):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(5)) as a:
            await a.call(["1", "1", "game:1", "phx_join", {}])
            await a.send(["1", "2", "game:1", "crash", {}])
            assert (await a.recv())[:4] == ["1", "1", "game:1", "phx_error"]
            assert await terminated() == ("game:1", "crashed")
            assert reply(await a.call(["3", "3", "game:1", "phx_join", {}]))[0] == "ok"
    assert any(r.exc_info and "boom in handle_in" in str(r.exc_info[1]) for r in caplog.records)


async def test_timers_reach_handle_info_and_die_with_the_channel(make_server, mint):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(5)) as a:
            await a.call(["1", "1", "game:1", "phx_join", {}])
            assert reply(await a.call(["1", "2", "game:1", "timer", {"after": 0.01}]))[0] == "ok"
            assert await a.recv() == ["1", None, "game:1", "tick", {"after": 0.01}]
            await a.call(["1", "3", "game:1", "timer", {"after": 60}])
            pending = fx.TIMERS[-1]
            assert not pending.cancelled()
            await a.call(["1", "4", "game:1", "phx_leave", {}])
            assert await terminated() == ("game:1", "left")
            assert pending.cancelled()


async def test_server_publishes_reach_every_channel_of_the_topic_and_a_crash_there_is_phx_error(make_server, mint, caplog):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(5)) as a, await RawClient.connect(server.url, mint(6)) as b:
            await a.call(["1", "1", "game:1", "phx_join", {}])
            await b.call(["7", "7", "game:1", "phx_join", {}])
            assert server.send_info("game:1", {"news": 1}) == 2
            assert await a.recv() == ["1", None, "game:1", "info", {"news": 1}]
            assert await b.recv() == ["7", None, "game:1", "info", {"news": 1}]
            server.send_info("game:1", "crash")
            assert (await a.recv())[:4] == ["1", "1", "game:1", "phx_error"]
            assert (await b.recv())[:4] == ["7", "7", "game:1", "phx_error"]
            assert server.send_info("game:1", {"news": 2}) == 0
    assert any(r.exc_info and "boom in handle_info" in str(r.exc_info[1]) for r in caplog.records)


async def test_a_closed_connection_terminates_its_channels_and_cancels_their_timers(make_server, mint):
    async with make_server(CONFIG) as server:
        a = await RawClient.connect(server.url, mint(5))
        await a.call(["1", "1", "game:1", "phx_join", {}])
        await a.call(["1", "2", "game:1", "timer", {"after": 60}])
        pending = fx.TIMERS[-1]
        await a.close()
        assert await terminated() == ("game:1", "closed")
        assert pending.cancelled()
