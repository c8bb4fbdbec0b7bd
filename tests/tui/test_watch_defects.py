"""``chanctl watch`` as a new user met it (issue 9): each test failed before its fix."""

from __future__ import annotations

import re

from rich.text import Text
from textual.geometry import Region
from textual.widgets import HelpPanel

from chanctl.tui.messages import Disconnected
from chanctl.tui.screens import DashboardScreen, EntryScreen
from chanctl.tui.screens.entry import entry_text
from chanctl.tui.widgets import ConnectionState, PresenceList, StatsHeader, SubscriberTable, TrafficLog
from chanctl.tui.widgets.traffic import PAUSE_LINES, TrafficLine
from tests.tui.pilot import SIZE, joined, log_text, select, until


async def test_pause_holds_a_bounded_number_of_lines_and_counts_the_rest(chat_server, watch_app):
    async with watch_app.run_test(size=SIZE) as pilot:
        traffic = watch_app.screen.query_one(TrafficLog)
        await until(pilot, lambda: watch_app.screen.live, "the snapshot")
        await pilot.press("p")
        entry = {"t": 1.0, "dir": "in", "topic": "room:1", "event": "e", "user": 1, "size": 2, "payload": "{}"}
        traffic.add_batch({"entries": [entry] * (PAUSE_LINES + 5), "presence": [], "dropped": 0}, 1.0)
        assert len(traffic.held) == PAUSE_LINES and traffic.held_dropped == 5
        assert f"PAUSED, {PAUSE_LINES} held, 5 dropped" in str(traffic.border_subtitle)
        await pilot.press("p")
        assert len(traffic.texts()) == PAUSE_LINES and not traffic.held


async def test_the_filter_applies_to_lines_already_shown_and_escape_closes_it(chat_server, mint, watch_app):
    room, lobby = await joined(chat_server.url, mint(7), "room:42"), await joined(chat_server.url, mint(7), "room:lobby")
    async with room, lobby, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await until(pilot, lambda: app.screen.live, "the snapshot")
        await room.call(["1", "2", "room:42", "new_msg", {"body": "in the room"}])
        await lobby.call(["1", "2", "room:lobby", "new_msg", {"body": "in the lobby"}])
        await until(pilot, lambda: "in the room" in log_text(app) and "in the lobby" in log_text(app), "both messages")
        field = app.screen.query_one("#filter")

        await pilot.press("slash")
        assert field.has_focus and field.value == ""  # the / that opened it is not typed into it
        await pilot.press(*"lobby")
        assert "in the lobby" in log_text(app) and "in the room" not in log_text(app)  # lines already there
        await pilot.press("enter")
        assert not field.has_class("visible") and app.screen.query_one(TrafficLog).topic_filter == "lobby"

        await pilot.press("slash", *"/x")
        assert field.value == "lobby/x"  # a / typed into the field is text, not a reopened filter
        await pilot.press("escape")
        assert not field.has_class("visible") and not field.has_focus
        assert app.screen.query_one(TrafficLog).topic_filter == "lobby"  # Escape keeps the filter from before
        await pilot.press("slash", "ctrl+u", "enter")
        assert "in the room" in log_text(app)


async def test_ctrl_c_quits(chat_server, watch_app):
    async with watch_app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: watch_app.screen.live, "the snapshot")
        await pilot.press("ctrl+c")
        await until(pilot, lambda: watch_app.return_code is not None, "the app to quit")
    assert watch_app.return_code == 0 and watch_app.failure is None


async def test_at_80x24_the_panels_show_rows_and_the_header_keeps_its_fields(chat_server, mint, watch_app):
    seven, fortytwo = await joined(chat_server.url, mint(7), "room:42"), await joined(chat_server.url, mint(42), "room:42")
    async with seven, fortytwo, watch_app.run_test(size=(80, 24)) as pilot:
        app = watch_app
        header = app.screen.query_one(StatsHeader)
        await until(pilot, lambda: header.stats, "the first stats")
        await select(pilot, app, "room:42")
        presence, subscribers = app.screen.query_one(PresenceList), app.screen.query_one(SubscriberTable)
        await until(pilot, lambda: presence.row_count == 2 and subscribers.row_count == 2, "two members")
        for table in (presence, subscribers):
            assert table.scrollable_content_region.height - 1 >= 2, table.id  # the column header takes a row
        await pilot.pause()
        lines = [strip.text for strip in header.render_lines(Region(0, 0, *header.size))]
        shown = " ".join(lines)
        for field in ("connections 3", "topics 2", "subscriptions 3"):
            assert field in shown, (field, lines)
        assert all(len(line.rstrip()) <= header.size.width for line in lines)
        for graph in app.screen.query("#graphs Graph"):  # the rates, each with its plot
            text = graph.render_lines(Region(0, 0, *graph.size))[0].text
            assert f"{graph.label} {graph.value} " in text and graph.value, (graph.label, text)


async def test_a_presence_update_shows_as_an_update_with_online_at_as_a_time(chat_server, mint, watch_app):
    async with await joined(chat_server.url, mint(7), "room:42") as member, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await select(pilot, app, "room:42")
        presence = app.screen.query_one(PresenceList)
        await until(pilot, lambda: "7" in presence.rows, "user 7 in the presence list")
        cells = [str(cell) for cell in presence.get_row("7")]
        assert not any(re.search(r"\d{10}", cell) for cell in cells), cells  # no epoch seconds
        assert any(re.fullmatch(r"\d\d:\d\d:\d\d", cell) for cell in cells), cells

        assert (await member.call(["1", "2", "room:42", "typing", {"typing": True}]))[4]["status"] == "ok"
        await until(pilot, lambda: "updated: 7" in log_text(app), "the update in the traffic log")
        assert "left: 7" not in log_text(app)
        await until(pilot, lambda: '"typing":true' in str(presence.get_row("7")[-1]), "the new meta")


async def test_the_screen_is_marked_stale_while_reconnecting(chat_server, mint, watch_app):
    async with watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        screen, state = app.screen, app.screen.query_one(ConnectionState)
        await until(pilot, lambda: screen.live, "the snapshot")
        assert not screen.has_class("stale")
        seen: list[tuple[bool, str]] = []  # the reconnect is quick: record each change as it happens
        screen.watch(state, "stale_since", lambda: seen.append((screen.has_class("stale"), str(state.render()))),
                     init=False)
        chat_server.disconnect("user_socket:1")  # the watcher's own socket
        await until(pilot, lambda: seen and state.state == "live", "stale, then live again")
        assert seen[0][0] and "STALE since" in seen[0][1], seen
        assert not screen.has_class("stale") and state.stale_since is None


async def test_enter_opens_the_whole_line_and_question_mark_shows_the_keys(chat_server, mint, watch_app):
    body = "long " * 30 + "END"
    async with await joined(chat_server.url, mint(7), "room:42") as member, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await until(pilot, lambda: app.screen.live, "the snapshot")
        await member.call(["1", "2", "room:42", "new_msg", {"body": body}])
        await until(pilot, lambda: "END" in log_text(app), "the message")
        traffic = app.screen.query_one(TrafficLog)
        traffic.focus()
        while "END" not in traffic.current().text.plain:
            await pilot.press("up")
        assert len(traffic.current().text) > SIZE[0]  # wider than the screen
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen), "the entry")
        assert body in entry_text(app.screen.line).plain
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "back to the dashboard")

        await pilot.press("question_mark")
        await until(pilot, lambda: app.screen.query(HelpPanel), "the keys")
        await pilot.press("question_mark")
        await until(pilot, lambda: not app.screen.query(HelpPanel), "the keys hidden")


async def test_a_notification_shows_a_client_string_as_text(chat_server, watch_app):
    async with watch_app.run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: watch_app.screen.live, "the snapshot")
        watch_app.screen.on_disconnected(Disconnected("[bold red]user_socket:9[/]\x1b[2J", 1))
        await until(pilot, lambda: watch_app.screen.query("Toast"), "the notification")
        shown = watch_app.screen.query_one("Toast").render()  # by name: Textual keeps the class private
        assert "[bold red]user_socket:9[/]\\x1b[2J" in getattr(shown, "plain", str(shown))


def test_an_opened_line_keeps_every_field_name_apart_from_its_value():
    entry = {"t": 1.0, "dir": "out", "topic": "room:42", "event": "new_msg", "recipients": 3, "size": 89, "payload": "{}"}
    line = TrafficLine(topic="room:42", kind="out", entry=entry, text=Text(""))
    rows = entry_text(line).plain.splitlines()
    assert "recipients 3" in rows
    assert len({row.index(row.split()[1]) for row in rows[:6]}) == 1  # the values line up


async def test_a_presence_list_the_server_cut_says_so_at_80_columns(chat_server, mint, watch_app, monkeypatch):
    """The admin plane caps ``inspect`` (issue 16): past its budget a presence list comes as its
    first keys, each with ``metas_cut`` and no metas, plus ``presence_cut``; subscribers past theirs
    as a part with ``subscribers_total``. The dashboard showed such keys as members with 0 metas and
    the part as the whole list. The budgets are lowered here so that 27 members pass them."""
    from chanctl.server import admin

    monkeypatch.setattr(admin, "INSPECT_PRESENCE_BYTES", 100)
    monkeypatch.setattr(admin, "PRESENCE_KEYS", 1)  # inspect keeps 25 keys
    monkeypatch.setattr(admin, "LIST_BYTES", 1000)
    members = [await joined(chat_server.url, mint(100 + n), "room:lobby") for n in range(27)]
    try:
        async with watch_app.run_test(size=(80, 24)) as pilot:
            app = watch_app
            await select(pilot, app, "room:lobby")
            presence, subscribers = app.screen.query_one(PresenceList), app.screen.query_one(SubscriberTable)
            await until(pilot, lambda: presence.row_count == 25 and subscribers.row_count, "the cut lists")
            assert presence.border_subtitle == "… 2 more not shown, metas cut"
            metas, online, meta = [str(cell) for cell in presence.get_row(sorted(presence.rows)[0].value)][1:]
            assert (metas, online, meta) == ("1", "-", "metas cut")  # its count, not 0
            more = 27 - subscribers.row_count
            assert more > 0 and subscribers.border_subtitle == f"… {more} more not shown"
            await pilot.pause()
            for table in (presence, subscribers):  # the whole note fits on the panel's bottom border
                assert len(str(table.border_subtitle)) + 4 <= table.outer_size.width, (table.id, table.outer_size)
    finally:
        for member in members:
            await member.close()
