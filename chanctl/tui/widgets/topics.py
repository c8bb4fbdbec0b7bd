"""The table of live topics: rates in and out, subscriber and presence counts, sortable.

Rows are refreshed once a second from ``stats`` (counts) and the traffic-derived rates; they are
sorted by the chosen column (busiest first by default) and the cursor stays on the selected
topic whatever moves around it. A topic with no traffic for a while is dimmed; one that left the
server's list (no subscribers, or out of its 200 busiest) stays dimmed for ``FADE`` refreshes
before its row goes.

Every row is one topic on the watched node. A cluster's dashboard would add a node column and
per-node rows here, keyed by ``(node, topic)``; until the server reports several nodes there is
no such column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from chanctl.tui.text import plain

__all__ = ["FADE", "QUIET", "SORTS", "TopicTable"]

FADE = 10
"""Refreshes (seconds) a topic that left the server's list stays on screen, dimmed."""
QUIET = 5
"""Refreshes (seconds) without traffic after which a topic is dimmed."""
COLUMNS = (("in", "in/s", 5), ("out", "out/s", 5), ("subscribers", "subs", 4), ("presence", "pres", 4),
           ("topic", "topic", None))
"""Key, label and width: figures first at fixed widths, the topic last (a long name is what gets cut
in a narrow terminal). Fixed widths matter: DataTable re-measures a whole column for every cell
updated with ``update_width``, which for 200 topics once a second kept the app busy for seconds."""
SORTS = ("busiest", "in", "out", "subscribers", "presence", "topic")
"""Sort orders, in the order ``s`` cycles through them; ``busiest`` is in + out per second."""


@dataclass
class TopicRow:
    """What one row shows."""

    subscribers: int = 0
    presence: int = 0
    rate_in: float = 0.0
    rate_out: float = 0.0
    quiet: int = 0
    """Refreshes since its last traffic."""
    gone: int | None = None
    """Refreshes since it left the server's list; ``None`` while listed."""

    def sort_key(self, order: str, topic: str) -> tuple[Any, ...]:
        """Biggest first for figures, A to Z for names; ties by topic name."""
        figures = {"busiest": self.rate_in + self.rate_out, "in": self.rate_in, "out": self.rate_out,
                   "subscribers": self.subscribers, "presence": self.presence}
        if order == "topic":
            return (topic,)
        return (-figures[order], -(self.rate_in + self.rate_out), -self.subscribers, topic)


def _rate(value: float) -> str:
    return "0" if value == 0 else f"{value:.1f}" if value < 1000 else f"{value / 1000:.1f}k"


class TopicTable(DataTable[Any]):
    """One row per topic; highlighting a row selects that topic; ``s`` changes the sort order."""

    BINDINGS = [Binding("s", "next_sort", "Sort")]

    class Selected(Message):
        """The user moved to ``topic``."""

        def __init__(self, topic: str) -> None:
            super().__init__()
            self.topic = topic

    class Sorted(Message):
        """The sort order changed to ``order``."""

        def __init__(self, order: str) -> None:
            super().__init__()
            self.order = order

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.topics: dict[str, TopicRow] = {}
        self.order = "busiest"
        self.selected: str | None = None
        """The topic the cursor is kept on (the screen's selection)."""

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(Text(label, justify="right") if width else label, key=key, width=width)

    def update_topics(self, counts: dict[str, Any], rates: dict[str, tuple[float, float]] | None = None,
                      quiet: dict[str, int] | None = None) -> None:
        """Take ``counts`` (``{topic: {subscribers, presence}}``) and, once a second, the rates.

        With ``rates`` (a ``stats`` refresh) topics missing from ``counts`` start fading; without
        (a ``snapshot``, which lists every topic) they go at once.
        """
        for topic, row in counts.items():
            if not isinstance(row, dict):
                continue
            current = self.topics.setdefault(topic, TopicRow())
            current.subscribers, current.presence = _count(row, "subscribers"), _count(row, "presence")
            current.gone = None
        for topic in [t for t in self.topics if t not in counts]:
            row = self.topics[topic]
            row.gone = 0 if row.gone is None else row.gone + 1
            if rates is None or row.gone >= FADE:
                del self.topics[topic]
        if rates is not None:
            for topic, row in self.topics.items():
                row.rate_in, row.rate_out = rates.get(topic, (0.0, 0.0))
                row.quiet = (quiet or {}).get(topic, 0)
        self._redraw()

    def action_next_sort(self) -> None:
        self.sort_by(SORTS[(SORTS.index(self.order) + 1) % len(SORTS)])

    def sort_by(self, order: str) -> None:
        self.order = order
        self._redraw()
        self.post_message(self.Sorted(order))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def _redraw(self) -> None:
        """Make the rows match ``topics`` in sort order, the cursor on ``selected``."""
        order = sorted(self.topics, key=lambda topic: self.topics[topic].sort_key(self.order, topic))
        for key in [key for key in self.rows if key.value not in self.topics]:
            self.remove_row(key)
        for topic in order:
            cells = self._cells(topic, self.topics[topic])
            if topic in self.rows:
                for (column, _, _), cell in zip(COLUMNS, cells, strict=True):
                    self.update_cell(topic, column, cell)
            else:
                self.add_row(*cells, key=topic)
        position = {topic: index for index, topic in enumerate(order)}
        self.sort("topic", key=lambda cell: position.get(getattr(cell, "topic", None), 0))
        if self.selected in self.rows and self.get_row_index(self.selected) != self.cursor_row:
            self.move_cursor(row=self.get_row_index(self.selected), animate=False)

    @staticmethod
    def _cells(topic: str, row: TopicRow) -> list[Text]:
        style = "dim italic" if row.gone is not None else "dim" if row.quiet >= QUIET else ""
        figures = [_rate(row.rate_in), _rate(row.rate_out), str(row.subscribers), str(row.presence)]
        return [*(Text(figure, style=style, justify="right") for figure in figures), _TopicCell.of(topic, style)]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.selected = event.row_key.value
            self.post_message(self.Selected(event.row_key.value))


class _TopicCell(Text):
    """A topic's name cell, escaped for the screen, that remembers the topic it shows (to sort by)."""

    topic: str

    @classmethod
    def of(cls, topic: str, style: str) -> _TopicCell:
        cell = cls(plain(topic).plain, style=style)
        cell.topic = topic
        return cell


def _count(row: dict[str, Any], name: str) -> int:
    value = row.get(name, 0)
    return value if isinstance(value, int) else 0
