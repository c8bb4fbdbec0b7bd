"""Helpers for driving ``chanctl watch`` through Textual's pilot against a real chat-sample server.

Every wait is a bounded loop over ``pilot.pause()`` that checks what the app shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chanctl.tui import WatchApp
from chanctl.tui.widgets import TopicTable, TrafficLog
from tests.support import TIMEOUT, RawClient

SIZE = (140, 40)


async def until(pilot, condition: Callable[[], object], what: str) -> None:
    """Let the app run until ``condition()`` holds; fail after TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause()


def log_text(app: WatchApp) -> str:
    return "\n".join(app.screen.query_one(TrafficLog).texts())


async def joined(url: str, token: str, topic: str) -> RawClient:
    """A member of ``topic`` that reads nothing more. Its queue of unread frames is unbounded: with
    websockets' default (16) a member that got more presence diffs stopped reading its socket, so its
    close waited 10 s for a close frame it could not read (9 of them made one test last 90 s)."""
    client = await RawClient.connect(url, token, ignore=frozenset({"presence_state", "presence_diff"}), max_queue=None)
    reply = await client.call(["1", "1", topic, "phx_join", {}])
    assert reply[4]["status"] == "ok", reply
    return client


async def select(pilot, app: WatchApp, topic: str) -> None:
    table = app.screen.query_one(TopicTable)
    await until(pilot, lambda: topic in table.rows, f"{topic} in the topic table")
    table.focus()
    table.move_cursor(row=table.get_row_index(topic))
    await until(pilot, lambda: app.screen.selected == topic, f"{topic} selected")
