"""The topic table: rates, sorting (busiest first), the selection kept, quiet and gone topics fading;
and the rates plots, live against a real chat-sample server."""

from __future__ import annotations

from textual.app import App, ComposeResult

from chanctl.tui.widgets import Graph, TopicTable
from chanctl.tui.widgets.topics import FADE, QUIET
from tests.tui.pilot import SIZE, joined, select, until


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TopicTable()


def order(table: TopicTable) -> list[str]:
    return [row.key.value for row in table.ordered_rows]


def counts(*topics: str) -> dict:
    return {topic: {"subscribers": 1, "presence": 0} for topic in topics}


async def test_busiest_first_the_selection_stays_and_gone_topics_fade():
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(TopicTable)
        table.update_topics(counts("a", "b", "c"))
        await pilot.pause()
        table.move_cursor(row=table.get_row_index("c"))
        await pilot.pause()
        assert table.selected == "c"

        table.update_topics(counts("a", "b", "c"), {"a": (1.0, 0.0), "b": (5.0, 5.0), "c": (0.0, 2.0)}, {})
        await pilot.pause()
        assert order(table) == ["b", "c", "a"]  # in + out per second, biggest first
        assert table.ordered_rows[table.cursor_row].key.value == "c" and table.selected == "c"

        table.update_topics(counts("a", "b", "c"), {"a": (9.0, 9.0)}, {"b": QUIET, "c": QUIET})
        await pilot.pause()
        assert order(table) == ["a", "b", "c"]
        assert table.ordered_rows[table.cursor_row].key.value == "c"  # the cursor moved with its topic
        assert "dim" in str(table.get_cell("b", "topic").style) and not table.get_cell("a", "topic").style

        await pilot.press("s")  # next order: in
        assert table.order == "in"
        table.sort_by("topic")
        assert order(table) == ["a", "b", "c"]

        for tick in range(FADE + 1):  # b left the server's list: dimmed for FADE refreshes, then gone
            table.update_topics(counts("a", "c"), {}, {})
            await pilot.pause()
            assert ("b" in table.rows) == (tick < FADE), tick
            if "b" in table.rows:
                assert "italic" in str(table.get_cell("b", "topic").style)
        assert table.selected == "c"


async def test_rates_and_plots_follow_live_traffic(chat_server, mint, watch_app):
    async with await joined(chat_server.url, mint(7), "room:42") as member, watch_app.run_test(size=SIZE) as pilot:
        app = watch_app
        await select(pilot, app, "room:42")
        table = app.screen.query_one(TopicTable)
        topic_in = app.screen.query_one("#topic-in", Graph)
        ref = 2

        async def chatted() -> bool:
            nonlocal ref
            ref += 1
            await member.call(["1", str(ref), "room:42", "new_msg", {"body": "hi"}])
            return table.topics["room:42"].rate_in > 0 and any(topic_in.values)

        for _ in range(200):  # a message per turn until a stats refresh has counted some
            if await chatted():
                break
            await pilot.pause()
        assert table.topics["room:42"].rate_in > 0 and table.topics["room:42"].rate_out > 0
        assert str(table.get_cell("room:42", "in")) != "0"
        header_in = app.screen.query_one("#graph-in", Graph)
        await until(pilot, lambda: any(header_in.values), "the server's in rate plotted")
        assert header_in.value.endswith("/s") and app.screen.query_one("#graph-connections", Graph).values
