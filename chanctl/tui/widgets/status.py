"""The two status lines: the server's figures (from ``stats``) and the state of our own socket."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

__all__ = ["ConnectionState", "StatsHeader"]


class StatsHeader(Static):
    """Node, uptime, connections, topics and rates of the watched server."""

    DEFAULT_CSS = "StatsHeader { height: 1; }"

    node: reactive[str] = reactive("")
    started: reactive[float | None] = reactive(None)
    """Local wall-clock time the node started at (snapshot ``uptime`` taken from now)."""
    stats: reactive[dict[str, Any]] = reactive(dict, always_update=True)

    def render(self) -> Text:
        if not self.node:
            return Text("waiting for the snapshot…", style="dim")
        stats = self.stats
        uptime = "" if self.started is None else _duration(time.time() - self.started)
        parts: list[tuple[str, str]] = [(self.node, "bold"), (f"  up {uptime}", "")]
        if stats:
            parts += [
                (f"  connections {stats.get('connections', 0)}", ""),
                (f"  topics {stats.get('topics', 0)}", ""),
                (f"  in {stats.get('messages_in_per_s', 0)}/s", ""),
                (f"  out {stats.get('messages_out_per_s', 0)}/s", ""),
                (f"  broadcasts {stats.get('broadcasts_per_s', 0)}/s", ""),
            ]
        return Text.assemble(*parts)


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class ConnectionState(Static):
    """Our socket to the admin plane: ``connecting``, ``live``, ``reconnecting``, ``closed``, or why it failed."""

    DEFAULT_CSS = "ConnectionState { height: 1; }"

    STYLES = {"connecting": "yellow", "live": "green", "reconnecting": "yellow", "refused": "bold red",
              "unreachable": "bold red", "error": "red", "closed": "red"}

    state: reactive[str] = reactive("connecting")
    detail: reactive[str] = reactive("")

    def render(self) -> Text:
        text = Text(self.state, style=self.STYLES.get(self.state, ""))
        if self.detail:
            text.append(f"  {self.detail}")  # plain text: a server's reason is never markup
        return text
