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

    def show(self, counts: dict[str, dict[str, int]]) -> None:
        """Make the rows match ``counts`` (``{topic: {subscribers, presence}}``), in topic order.

        Rows are updated in place where possible, so the cursor stays on its topic.
        """
        for key in [key for key in self.rows if key.value not in counts]:
            self.remove_row(key)
        for topic in sorted(counts):
            row = counts[topic]
            subscribers, presence = row.get("subscribers", 0), row.get("presence", 0)
            if topic in self.rows:
                self.update_cell(topic, "subscribers", subscribers)
                self.update_cell(topic, "presence", presence)
            else:
                self.add_row(plain(topic), subscribers, presence, key=topic)

    @property
    def selected(self) -> str | None:
        """The topic under the cursor, if any."""
        if not self.rows or self.cursor_row < 0:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Selected(event.row_key.value))
