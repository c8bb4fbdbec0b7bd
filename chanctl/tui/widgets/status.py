"""The status lines: the server's figures (from ``stats``) and the state of our own socket."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widgets import Static

from chanctl.tui.text import clock, plain, span

__all__ = ["ConnectionState", "StatsHeader"]


class StatsHeader(Static):
    """Node, uptime, connections, topics and subscriptions of the watched server (the rates are
    plotted below it), then, in a cluster, the cluster's totals (``stats.cluster``: nodes that
    answered, connections, in/out rates) and one field per node with its connections and in/out
    rates, or ``down``.

    Fields are packed into as many lines as the width needs, never cut: at 80 columns they take
    two lines instead of losing the last ones off the edge.
    """

    DEFAULT_CSS = "StatsHeader { height: auto; }"

    node: reactive[str] = reactive("", layout=True)
    started: reactive[float | None] = reactive(None)
    """Local wall-clock time the node started at (snapshot ``uptime`` taken from now)."""
    stats: reactive[dict[str, Any]] = reactive(dict, always_update=True, layout=True)
    """The newest ``stats`` payload (a new one may need another line: layout)."""

    def fields(self) -> list[Text]:
        """The figures, each a unit that is never split across lines."""
        if not self.node:
            return [Text("waiting for the snapshot…", style="dim")]
        stats = self.stats
        fields = [plain(self.node, "bold")]
        if self.started is not None:
            fields.append(Text(f"up {span(self.app.clock() - self.started)}"))
        if stats:
            fields += [
                Text(f"connections {stats.get('connections', 0)}"),
                Text(f"topics {stats.get('topics', 0)}"),
                Text(f"subscriptions {stats.get('subscriptions', 0)}"),
            ]
            if isinstance(cluster := stats.get("cluster"), dict):
                fields.append(_cluster_field(cluster))
            fields += [_node_field(node) for node in stats.get("nodes") or () if isinstance(node, dict)]
        return fields

    def render(self) -> Text:
        return Text("\n").join(_pack(self.fields(), self.content_size.width or 80))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(_pack(self.fields(), width))


def _cluster_field(cluster: dict[str, Any]) -> Text:
    """The whole cluster (``stats.cluster``, summed over the nodes that answered): what an operator
    of several nodes reads first."""
    rates = f"{cluster.get('messages_in_per_s', 0):g}/{cluster.get('messages_out_per_s', 0):g}/s"
    return Text("cluster", style="bold") + Text(f" {cluster.get('nodes', 0)} nodes {cluster.get('connections', 0)} conns {rates}")


def _node_field(node: dict[str, Any]) -> Text:
    """One cluster node (``stats.nodes``): its name, then its connections and message rates, or
    why it has none (``down``, ``no answer``). Names are the operators' but escaped all the same."""
    name = plain(f"node {node.get('node', '?')}", "bold" if node.get("self") else "")
    status = node.get("status", "up")
    if status != "up":
        return name + Text(f" {status}", style="red")
    rates = f"{node.get('messages_in_per_s', 0):g}/{node.get('messages_out_per_s', 0):g}/s"
    return name + Text(f" {node.get('connections', 0)} conns {rates}")


def _pack(fields: list[Text], width: int) -> list[Text]:
    """Lines of at most ``width`` cells with fields separated by two spaces; a field longer than
    the width gets a line of its own, cut with an ellipsis."""
    lines: list[Text] = []
    for field in fields:
        if field.cell_len > width:
            field = field.copy()
            field.truncate(max(width, 1), overflow="ellipsis")
        if lines and lines[-1].cell_len + 2 + field.cell_len <= width:
            lines[-1].append("  ")
            lines[-1].append_text(field)
        else:
            lines.append(field.copy())
    return lines or [Text("")]


class ConnectionState(Static):
    """Our socket to the admin plane: ``connecting``, ``live``, ``reconnecting``, ``closed``, or why
    it failed. Away from ``live`` after having been live, it says since when the figures are stale."""

    DEFAULT_CSS = "ConnectionState { height: 1; }"

    STYLES = {"connecting": "yellow", "live": "green", "reconnecting": "bold black on yellow",
              "refused": "bold red", "unreachable": "bold red", "error": "red", "closed": "bold white on red"}

    state: reactive[str] = reactive("connecting")
    detail: reactive[str] = reactive("")
    stale_since: reactive[float | None] = reactive(None)
    """When the screen stopped being live (``None`` while live or before it ever was)."""

    def render(self) -> Text:
        text = Text(self.state, style=self.STYLES.get(self.state, ""))
        if self.stale_since is not None:
            text.append(f"  STALE since {clock(self.stale_since, millis=False)}", style="bold")
        if self.detail:
            text.append("  ")
            text.append_text(plain(self.detail))  # a server's reason is never markup
        return text
