"""A one-line plot of a rate over time: a label with the newest value, then one bar per second.

Textual's ``Sparkline`` scales from the smallest value to the largest and stretches the data to
the width, so a steady 500/s looks like nothing and 60 samples fill 20 columns or 200 alike. A
throughput plot wants zero at the bottom and a fixed time axis: the newest sample in the last
column, one column per ``stats`` (a second), empty columns before the history starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from chanctl.tui.text import plain

__all__ = ["Graph", "bars"]

BARS = "▁▂▃▄▅▆▇█"


def bars(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as bars scaled from 0 to their maximum (zero: the lowest bar)."""
    shown = list(values)[-width:] if width > 0 else []
    top = max(shown, default=0.0)
    cells = [BARS[0] if top <= 0 or v <= 0 else BARS[max(1, min(len(BARS) - 1, round(v / top * (len(BARS) - 1))))]
             for v in shown]
    return " " * (max(width, 0) - len(cells)) + "".join(cells)


class Graph(Widget):
    """``label value ▁▂▅▇`` on one line; the screen sets ``values`` (and ``value``, the text)."""

    DEFAULT_CSS = """
    Graph { height: 1; width: 1fr; padding: 0 1 0 0; }
    """

    values: reactive[tuple[float, ...]] = reactive(tuple)
    label: reactive[str] = reactive("")
    value: reactive[str] = reactive("")

    def __init__(self, label: str, style: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.label = label
        self.bar_style = style

    def render(self) -> Text:
        head = Text.assemble((self.label, "bold"), " ", plain(self.value), " ")
        width = self.content_size.width - head.cell_len
        return head + Text(bars(self.values, width), style=self.bar_style)
