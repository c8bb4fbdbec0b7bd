"""Render ``chanctl watch`` as SVG pictures: the README's docs/watch.svg and the snapshot tests'.

    python scripts/watch_screenshot.py           # rewrite docs/watch.svg and tests/tui/snapshots/*.svg
    python scripts/watch_screenshot.py --check   # exit 1 if any of them is stale

The picture is the real app (its screen, widgets and styles) fed a minute and a half of the chat
sample's admin plane (``sample_configs/chat.yaml``: room:42 with members 42 and 7, the public
lobby, a notification topic and the server-only updates feed): the ``snapshot``, ``stats``,
``traffic`` and ``inspect`` payloads the server sends, in its format, made from a seeded random
generator on a fixed clock and in UTC, so that the same code draws the same picture byte for byte.
The tests (tests/tui/test_snapshots.py) fail when a picture differs from the committed one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chanctl.tui import WatchApp
from chanctl.tui.messages import Inspected, Snapshot, Stats, Traffic
from chanctl.tui.screens import DashboardScreen
from chanctl.tui.widgets import TopicTable

ROOT = Path(__file__).resolve().parent.parent
PICTURES = {
    ROOT / "docs" / "watch.svg": (120, 36),
    ROOT / "tests" / "tui" / "snapshots" / "dashboard_80x24.svg": (80, 24),
    ROOT / "tests" / "tui" / "snapshots" / "dashboard_160x45.svg": (160, 45),
}
"""Each picture and its terminal size (columns, rows)."""
SEED = 17
START = 1_796_040_000.0
"""The fixed clock: the replay's first second (2026-11-30 12:00:00 UTC)."""
SECONDS = 90
URL = "ws://127.0.0.1:4000/socket"
NODE = "vm-4242"
SELECTED = "room:42"

ROOMS = {"room:42": [42, 7], "room:lobby": [99, 5, 13, 21]}
"""Who is in which room (members of room:42 from the sample's data; anyone may join the lobby)."""
LISTENERS = {"notifications:user_42": [42], "updates:all": [42, 7, 99, 5], "chanctl:admin": [1]}
LINES = ["hi all", "lunch at 12?", "the deploy is green", "who has the [bold]keys[/bold]?", "brb",
         "see the README", "\u2026 and one more thing", "ok", "on my way", "thanks!"]


class ReplayScreen(DashboardScreen):
    """The dashboard with its network feed replaced by a fixed list of admin-plane payloads."""

    def __init__(self, inspect_replies: dict[str, dict[str, Any]]) -> None:
        super().__init__(URL, "-", 10.0)
        self.inspect_replies = inspect_replies

    def feed(self) -> None:  # type: ignore[override]
        """No socket: the script hands the payloads to the handlers itself."""

    def inspect(self, topic: str) -> None:  # type: ignore[override]
        if topic in self.inspect_replies:
            self.post_message(Inspected(self.inspect_replies[topic]))


class ReplayApp(WatchApp):
    def __init__(self, inspect_replies: dict[str, dict[str, Any]]) -> None:
        self.now = START
        super().__init__(URL, "-", clock=lambda: self.now)
        self.inspect_replies = inspect_replies

    def get_default_screen(self) -> DashboardScreen:
        return ReplayScreen(self.inspect_replies)


def _meta(rng: random.Random, online_at: float, typing: bool) -> dict[str, Any]:
    return {"typing": typing, "online_at": int(online_at), "phx_ref": f"F{rng.getrandbits(40):010x}"}


def chat_minute(seed: int = SEED) -> tuple[list[tuple[float, Any]], dict[str, dict[str, Any]]]:
    """The replay: ``(clock, message)`` in order, and the ``inspect`` reply of each room."""
    rng = random.Random(seed)
    joined_at = {user: START - 3000 + 41 * user for users in ROOMS.values() for user in users}
    presence = {room: {str(u): {"metas": [_meta(rng, joined_at[u], False)]} for u in users} for room, users in ROOMS.items()}
    members = {**ROOMS, **LISTENERS}
    topics = {topic: {"subscribers": len(users), "presence": len(presence.get(topic, {}))} for topic, users in members.items()}
    snapshot = {"nodes": [{"name": NODE, "version": "0.1.0", "url": URL + "/websocket", "uptime": 3725.0}],
                "topics": topics, "connections_total": 8, "connections": []}
    replay: list[tuple[float, Any]] = [(START, Snapshot(snapshot))]
    ids = iter(range(1, 10**6))
    for second in range(SECONDS):
        busy = 1.5 + 1.2 * ((second // 15) % 3)  # the chat comes in waves
        counts = [0, 0, 0]  # in, out (deliveries), broadcasts
        for tick in range(4):
            t = START + second + tick / 4
            entries, diffs = [], []
            for room, users in ROOMS.items():
                for user in users:
                    if rng.random() < busy / 4 / len(users):
                        body = rng.choice(LINES)
                        at = t + rng.random() / 4
                        entries.append({"t": at, "dir": "in", "topic": room, "event": "new_msg", "user": user,
                                        "size": 12 + len(body), "payload": f'{{"body":"{body}"}}', "recipients": 1})
                        out = f'{{"body":"{body}","user_id":{user},"id":"{next(ids):x}"}}'
                        entries.append({"t": at + 0.0004, "dir": "out", "topic": room, "event": "new_msg",
                                        "user": None, "size": len(out), "payload": out, "recipients": len(users)})
                        counts[0] += 1
                        counts[1] += len(users)
                        counts[2] += 1
                    if rng.random() < 0.04:
                        key = str(user)
                        old = presence[room][key]["metas"][0]
                        new = {**_meta(rng, old["online_at"], not old["typing"]), "phx_ref_prev": old["phx_ref"]}
                        presence[room][key] = {"metas": [new]}
                        diffs.append({"topic": room, "joins": {key: {"metas": [new]}}, "leaves": {key: {"metas": [old]}}})
                        counts[0] += 1
                        counts[1] += len(users)
            if second % 20 == 7 and tick == 0:
                out = '{"status":"deployed","version":"' + f"1.4.{second}" + '"}'
                entries.append({"t": t, "dir": "out", "topic": "updates:all", "event": "deploy", "user": None,
                                "size": len(out), "payload": out, "recipients": len(LISTENERS["updates:all"])})
                counts[1] += len(LISTENERS["updates:all"])
                counts[2] += 1
            if entries or diffs:
                replay.append((t + 0.25, Traffic({"entries": sorted(entries, key=lambda e: e["t"]),
                                                  "presence": diffs, "dropped": 0})))
        connections = 8 + (second >= 40) + (second >= 41) - (second >= 70)
        stats = {"node": NODE, "t": START + second + 1, "connections": connections, "topics": len(topics),
                 "subscriptions": sum(len(users) for users in members.values()),
                 "messages_in_per_s": float(counts[0]), "messages_out_per_s": float(counts[1]),
                 "broadcasts_per_s": float(counts[2]), "tap_dropped": 0, "by_topic": topics}
        replay.append((START + second + 1, Stats(stats)))
    replies = {room: {"topic": room, "presence": presence[room],
                      "subscribers": [{"socket_id": f"user_socket:{u}", "user": u, "remote": f"127.0.0.1:{51000 + 37 * u}",
                                       "connected_at": joined_at[u], "topics": [room], "join_ref": "1",
                                       "expires_at": joined_at[u] + 3600} for u in users]}
               for room, users in ROOMS.items()}
    return replay, replies


def _handler(screen: DashboardScreen, message: Any) -> Any:
    return {Snapshot: screen.on_snapshot, Stats: screen.on_stats, Traffic: screen.on_traffic}[type(message)]


PINNED_ENV = {"TZ": "UTC", "NO_COLOR": None}
"""The environment a picture is drawn in, whatever the caller's: times in UTC, colours on
(Textual honours ``NO_COLOR``, which would draw every picture without them)."""


@contextmanager
def pinned_environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in PINNED_ENV}

    def apply(values: dict[str, str | None]) -> None:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()

    apply(PINNED_ENV)
    try:
        yield
    finally:
        apply(saved)


async def render(size: tuple[int, int]) -> str:
    """The dashboard at ``size`` after the replay, as SVG, in the pinned environment."""
    with pinned_environment():
        replay, replies = chat_minute()
        app = ReplayApp(replies)
        async with app.run_test(size=size) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            for at, message in replay:
                app.now = at
                _handler(screen, message)(message)
                if isinstance(message, Snapshot):
                    await pilot.pause()
                    table = screen.query_one(TopicTable)
                    table.move_cursor(row=table.get_row_index(SELECTED))
                    await pilot.pause()
            for _ in range(3):
                await pilot.pause()
            await pilot.wait_for_scheduled_animations()
            return app.export_screenshot(title="chanctl watch")


def pictures() -> Iterator[tuple[Path, str]]:
    """Each picture's path and its freshly rendered SVG."""
    for path, size in PICTURES.items():
        yield path, asyncio.run(render(size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed picture is stale")
    args = parser.parse_args()
    stale = []
    for path, svg in pictures():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != svg:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(svg, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in stale:
        print(f"stale: {path.relative_to(ROOT)} (run python scripts/watch_screenshot.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
