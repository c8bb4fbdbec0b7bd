"""``chanctl watch``: the real Textual app, driven by its pilot, against a real chat-sample server.

Traffic comes from RawClient sockets; every wait is a bounded loop over ``pilot.pause()`` that
checks what the app shows.
"""

from __future__ import annotations

import asyncio

import pytest

from chanctl.client import Client
from chanctl.cli.target import exit_code_for
from chanctl.config.load import load_config
from chanctl.errors import ConnectRefused, JoinRefused
from chanctl.server.admin import ADMIN_TOPIC
from chanctl.server.runtime import build_server
from chanctl.tui import WatchApp
from chanctl.tui.messages import Snapshot, Status, Traffic
from chanctl.tui.widgets import ConnectionState, PresenceList, StatsHeader, SubscriberTable, TopicTable, TrafficLog
from tests.conftest import CHAT
from tests.support import TIMEOUT
from tests.tui.pilot import SIZE, joined, log_text, select, until

async def test_header_and_topic_table_show_the_server(chat_server, mint, watch_app):
    async with await joined(chat_server.url, mint(7), "room:42"), watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        state, header = app.screen.query_one(ConnectionState), app.screen.query_one(StatsHeader)
        table = app.screen.query_one(TopicTable)
        await until(pilot, lambda: "room:42" in table.rows, "room:42 in the topic table")
        assert state.state == "live"
        assert [str(cell) for cell in table.get_row("room:42")] == ["0", "0", "1", "1", "room:42"]  # no traffic yet
        await until(pilot, lambda: header.stats, "the first stats")
        assert header.stats["connections"] == 2 and header.node
        async with await joined(chat_server.url, mint(42), "room:42"):  # a later join: from stats
            await until(pilot, lambda: str(table.get_cell("room:42", "subscribers")) == "2", "2 subscribers")


async def test_selecting_a_topic_shows_its_presence_and_follows_its_diffs(chat_server, mint, watch_app):
    async with await joined(chat_server.url, mint(7), "room:42"), watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await select(pilot, app, "room:42")
        presence, subscribers = app.screen.query_one(PresenceList), app.screen.query_one(SubscriberTable)
        await until(pilot, lambda: "7" in presence.rows, "user 7 in the presence list")
        assert "0:user_socket:7" in subscribers.rows
        async with await joined(chat_server.url, mint(42), "room:42"):
            await until(pilot, lambda: "42" in presence.rows, "user 42 in the presence list")
        await until(pilot, lambda: "42" not in presence.rows, "user 42 gone from the presence list")
        assert [key.value for key in presence.rows] == ["7"]


async def test_a_subscriber_row_counts_down_the_time_left_on_its_token(chat_server, mint, watch_app):
    async with await joined(chat_server.url, mint(7), "room:42"), watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await select(pilot, app, "room:42")
        subscribers = app.screen.query_one(SubscriberTable)
        await until(pilot, lambda: "0:user_socket:7" in subscribers.rows, "user 7's socket in the subscribers")
        expires_at = next(c.session.expires_at for c in chat_server.connections if c.user.get("id") == 7)
        hours, minutes, seconds = map(int, str(subscribers.get_cell("0:user_socket:7", "expires")).split(":"))
        assert abs(hours * 3600 + minutes * 60 + seconds - (expires_at - app.clock())) <= 5  # 14 days (max_age)
        app.clock = lambda: expires_at - 61.5
        subscribers.tick()
        assert str(subscribers.get_cell("0:user_socket:7", "expires")) == "1:01"
        app.clock = lambda: expires_at + 1
        subscribers.tick()
        assert str(subscribers.get_cell("0:user_socket:7", "expires")) == "expired"


async def test_a_pushed_message_appears_in_the_traffic_log_and_pause_holds_it(chat_server, mint, watch_app):
    async with await joined(chat_server.url, mint(7), "room:42") as member, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        traffic = app.screen.query_one(TrafficLog)
        await until(pilot, lambda: app.screen.live, "the snapshot")
        reply = await member.call(["1", "2", "room:42", "new_msg", {"body": "hello [bold]from\x1b[31m 7"}])
        assert reply[4]["status"] == "ok"
        await until(pilot, lambda: "hello [bold]from" in log_text(app), "the message in the traffic log")
        line = next(line for line in log_text(app).splitlines() if "hello" in line and " in " in line)
        assert "room:42 new_msg u:7" in line and "\\u001b[31m" in line  # plain text, never markup
        await member.call(["1", "3", "room:42", "bell\x07", {}])  # an unknown event: error reply, still traffic
        await until(pilot, lambda: "bell\\x07" in log_text(app), "the control character escaped")

        await pilot.press("p")
        assert traffic.paused
        await member.call(["1", "4", "room:42", "new_msg", {"body": "while paused"}])
        await until(pilot, lambda: len(traffic.held) >= 2, "the paused batch (in and out) to be held")
        assert "while paused" not in log_text(app)
        assert "PAUSED, 2 held" in str(traffic.border_subtitle)

        await pilot.press("p")
        assert log_text(app).count("while paused") == 2  # held, then shown on resume
        await member.call(["1", "5", "room:42", "new_msg", {"body": "after the pause"}])
        await until(pilot, lambda: "after the pause" in log_text(app), "traffic again after unpausing")
        assert log_text(app).index("while paused") < log_text(app).index("after the pause")


async def test_the_topic_filter_hides_other_topics(chat_server, mint, watch_app):
    room, lobby = await joined(chat_server.url, mint(7), "room:42"), await joined(chat_server.url, mint(7), "room:lobby")
    async with room, lobby, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await until(pilot, lambda: app.screen.live, "the snapshot")
        await pilot.press("slash", *"lobby", "enter")
        assert app.screen.query_one(TrafficLog).topic_filter == "lobby"
        await room.call(["1", "2", "room:42", "new_msg", {"body": "in the room"}])
        await lobby.call(["1", "2", "room:lobby", "new_msg", {"body": "in the lobby"}])
        await until(pilot, lambda: "in the lobby" in log_text(app), "the lobby message")
        assert "in the room" not in log_text(app)  # sent first: its batch came no later


async def test_d_disconnects_the_selected_socket_after_confirmation(chat_server, mint, watch_app):
    seven, fortytwo = await joined(chat_server.url, mint(7), "room:42"), await joined(chat_server.url, mint(42), "room:42")
    async with seven, fortytwo, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await select(pilot, app, "room:42")
        subscribers = app.screen.query_one(SubscriberTable)
        await until(pilot, lambda: subscribers.row_count == 2, "the subscriber list")
        subscribers.focus()
        subscribers.move_cursor(row=subscribers._ids.index("user_socket:42"))
        async with await joined(chat_server.url, mint(7), "room:42"):  # a refresh while 42 is selected
            await until(pilot, lambda: subscribers.row_count == 3, "the third subscriber")
            assert subscribers._ids[subscribers.cursor_row] == "user_socket:42"
            await pilot.press("d")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", "the confirmation")
            await pilot.press("y")
            await asyncio.wait_for(fortytwo.ws.wait_closed(), TIMEOUT)
        assert fortytwo.ws.close_code == 1001
        assert (await seven.call([None, "9", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"  # 7 untouched


async def test_a_non_admin_token_shows_the_refusal_and_ends_the_app(chat_server, mint):
    app = WatchApp(chat_server.url, mint(42), timeout=TIMEOUT)
    async with app.run_test(size=SIZE) as pilot:
        state = app.screen.query_one(ConnectionState)
        await until(pilot, lambda: app.failure is not None, "the refusal")
    assert isinstance(app.failure, JoinRefused)
    assert state.state == "refused" and "unauthorized" in state.detail
    assert app.return_code == 1


async def test_a_dropped_socket_shows_reconnecting_then_live_again(chat_server, mint, watch_app):
    seen: list[object] = []
    async with watch_app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        app = watch_app
        state = app.screen.query_one(ConnectionState)
        await until(pilot, lambda: app.screen.live, "the snapshot")
        async with Client(chat_server.url, token=mint(2, admin=True)) as other:
            operator = other.channel(ADMIN_TOPIC)
            await operator.join(TIMEOUT)
            closed = await operator.push("disconnect", {"socket_id": "user_socket:1"}, TIMEOUT)  # the watcher
            assert closed.response == {"closed": 1}
        await until(pilot, lambda: any(isinstance(m, Status) for m in seen), "the disconnect status")
        status = next(m for m in seen if isinstance(m, Status))
        assert status.state == "reconnecting" and "close code 1001" in status.text
        after = seen.index(status) + 1
        await until(pilot, lambda: any(isinstance(m, Snapshot) for m in seen[after:]), "a snapshot after the rejoin")

        def rejoined() -> bool:
            return any(isinstance(m, Status) and m.text.endswith(": rejoined") for m in seen)

        await until(pilot, lambda: rejoined() and state.state == "live", "live again, the rejoin line notwithstanding")


def test_a_backlog_of_traffic_batches_coalesces_without_losing_entries():
    older = Traffic({"entries": [{"n": 1}], "presence": [{"topic": "a"}], "dropped": 3})
    newer = Traffic({"entries": [{"n": 2}], "presence": [], "dropped": 5})
    assert older.can_replace(newer)
    assert newer.payload == {"entries": [{"n": 1}, {"n": 2}], "presence": [{"topic": "a"}], "dropped": 5}
    assert not older.can_replace(Status("x"))


@pytest.mark.parametrize("user", ["[/x]", "[b]spoof[/b]"])
async def test_a_socket_id_with_markup_is_shown_as_text(chat_server, mint, watch_app, user):
    """Issue 16: the disconnect notice passed a socket id (from token claims) with markup on: "[/x]"
    made watch exit 1, "[b]spoof[/b]" showed as another id."""
    async with await joined(chat_server.url, mint(user), "room:lobby") as victim, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await select(pilot, app, "room:lobby")
        subscribers = app.screen.query_one(SubscriberTable)
        await until(pilot, lambda: f"user_socket:{user}" in subscribers._ids, "the subscriber")
        subscribers.focus()
        subscribers.move_cursor(row=subscribers._ids.index(f"user_socket:{user}"))
        await pilot.press("d")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", "the confirmation")
        await pilot.press("y")
        await asyncio.wait_for(victim.ws.wait_closed(), TIMEOUT)
        await until(pilot, lambda: any(f"user_socket:{user}" in str(n.message) for n in app._notifications), "the notice")
        (notice,) = [n for n in app._notifications if f"user_socket:{user}" in str(n.message)]
        assert notice.markup is False  # shown as the text it is
        assert app.return_code is None and app.is_running


async def test_a_403_on_reconnect_ends_watch_as_refused(chat_config, mint):
    """The server comes back with another secret (as for an expired or revoked token): the client
    gives up instead of retrying forever, and watch ends with the failure (the CLI exits 3)."""
    server = build_server(chat_config, host="127.0.0.1", port=0)
    await server.start()
    app = WatchApp(server.url, mint(1, admin=True), timeout=TIMEOUT)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.screen.live, "the snapshot")
            port = server.port
            await server.shutdown()
            rotated = load_config(CHAT, env={"CHANCTL_SECRET": "another-secret-" + "x" * 32})
            server = build_server(rotated, host="127.0.0.1", port=port)
            await server.start()
            await until(pilot, lambda: app.failure is not None, "the refusal")
        assert isinstance(app.failure, ConnectRefused) and app.failure.status == 403
        assert exit_code_for(app.failure) == 3
    finally:
        await server.shutdown()
