"""The table of live topics with their subscriber and presence counts."""

from __future__ import annotations

from typing import Any

from textual.message import Message
from textual.widgets import DataTable

from chanctl.tui.text import plain

__all__ = ["TopicTable"]


class TopicTable(DataTable[Any]):
    """One row per topic; highlighting a row selects that topic."""

    class Selected(Message):
        """The user moved to ``topic``."""

        def __init__(self, topic: str) -> None:
            super().__init__()
            self.topic = topic

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)

    def on_mount(self) -> None:
        self.add_column("topic", key="topic")
        self.add_column("subscribers", key="subscribers")
        self.add_column("presence", key="presence")

    def show(self, counts: dict[str, dict[str, int]], selected: str | None = None) -> None:
        """Make the rows match ``counts`` (``{topic: {subscribers, presence}}``), in topic order.

        Rows are updated in place; when rows come or go, the cursor is put back on ``selected``
        so that the selection does not jump to whichever topic took its place.
        """
        gone = [key for key in self.rows if key.value not in counts]
        for key in gone:
            self.remove_row(key)
        added = False
        for topic, row in counts.items():
            if not isinstance(row, dict):
                continue
            subscribers, presence = row.get("subscribers", 0), row.get("presence", 0)
            if topic in self.rows:
                self.update_cell(topic, "subscribers", subscribers)
                self.update_cell(topic, "presence", presence)
            else:
                self.add_row(plain(topic), subscribers, presence, key=topic)
                added = True
        if added:
            self.sort("topic", key=str)
        if (added or gone) and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Selected(event.row_key.value))
