"""The scrolling tail of traffic: sampled client events (``in``), broadcasts (``out``), presence diffs."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import RichLog

from chanctl.tui.text import plain

__all__ = ["TrafficLog"]

MAX_LINES = 2_000
"""Lines kept for scrolling back; older ones scroll out."""


class TrafficLog(RichLog):
    """The admin plane's traffic tail, one line per entry, with pause and a topic filter.

    While paused, entries are counted and not kept: the log is a live sample, not a record.
    """

    paused: reactive[bool] = reactive(False)
    topic_filter: reactive[str] = reactive("")
    """Show only entries whose topic contains this text (empty: all)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=False, markup=False, highlight=False, **kwargs)
        self.server_dropped = 0
        """Entries the server's tap sampled out (``dropped``, since it started)."""
        self.skipped = 0
        """Entries that arrived while paused."""
        self.muted: frozenset[str] = frozenset()
        """Topics never shown (the dashboard's own ``inspect`` commands would fill the log)."""

    def add_batch(self, payload: dict[str, Any]) -> None:
        """Append one ``traffic`` batch: its entries, then its presence diffs."""
        dropped = payload.get("dropped")
        if isinstance(dropped, int):
            self.server_dropped = dropped
        entries = [e for e in payload.get("entries", []) if isinstance(e, dict)]
        diffs = [d for d in payload.get("presence", []) if isinstance(d, dict)]
        if self.paused:
            self.skipped += sum(map(self._wanted, entries)) + sum(map(self._wanted, diffs))
        else:
            now = time.time()
            lines = [_entry_line(e) for e in entries if self._wanted(e)]
            lines += [_presence_line(now, d) for d in diffs if self._wanted(d)]
            for line in lines:
                self.write(line)
        self._update_subtitle()

    def _wanted(self, entry: dict[str, Any]) -> bool:
        topic = str(entry.get("topic", ""))
        return topic not in self.muted and (not self.topic_filter or self.topic_filter in topic)

    def watch_paused(self) -> None:
        self._update_subtitle()

    def watch_topic_filter(self) -> None:
        self._update_subtitle()

    def _update_subtitle(self) -> None:
        parts = [Text(f"dropped by the server: {self.server_dropped}")]
        if self.topic_filter:
            parts.append(Text("filter: ") + plain(self.topic_filter))
        if self.paused:
            parts.append(Text(f"PAUSED, {self.skipped} not shown", style="bold"))
        elif self.skipped:
            parts.append(Text(f"{self.skipped} not shown while paused"))
        self.border_subtitle = Text(" · ").join(parts)


def _clock(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03}"


def _entry_line(entry: dict[str, Any]) -> Text:
    """``time dir topic event user size payload``; ``out`` shows its recipient count as the user."""
    direction = entry.get("dir")
    who = f"u:{entry.get('user')}" if direction == "in" else f"→{entry.get('recipients')}"
    return Text.assemble(
        (_clock(entry.get("t")), "dim"), " ",
        plain(f"{direction!s:<3}", "cyan" if direction == "in" else "magenta"), " ",
        plain(entry.get("topic"), "bold"), " ",
        plain(entry.get("event"), "yellow"), " ",
        plain(who), " ",
        (f"{entry.get('size')}B", "dim"), " ",
        plain(entry.get("payload")),
    )


def _presence_line(now: float, diff: dict[str, Any]) -> Text:
    joins, leaves = diff.get("joins") or {}, diff.get("leaves") or {}
    summary = "joined: " + ", ".join(map(str, joins)) if joins else ""
    if leaves:
        summary += ("; " if summary else "") + "left: " + ", ".join(map(str, leaves))
    return Text.assemble(
        (_clock(now), "dim"), " ", ("pre", "green"), " ", plain(diff.get("topic"), "bold"), " ",
        ("presence_diff", "yellow"), " ", plain(summary),
    )
