"""The scrolling tail of traffic: sampled client events (``in``), broadcasts (``out``), presence diffs.

A Line API view over the lines kept in memory, so that the topic filter can be applied to lines
already received, a pause can hold what arrives, and a cursor can pick one line to open whole.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.segment import Segment
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from chanctl.client import diff_keys
from chanctl.tui.text import clock, plain

__all__ = ["MAX_LINES", "PAUSE_LINES", "TrafficLine", "TrafficLog"]

MAX_LINES = 2_000
"""Lines kept for scrolling back and for re-filtering; older ones scroll out."""
PAUSE_LINES = 2_000
"""Lines held while paused; past that the oldest held ones are dropped (and counted)."""


@dataclass(frozen=True)
class TrafficLine:
    """One line of the log: the admin plane's entry (or presence diff) and its rendering."""

    topic: str
    kind: str
    """``in``, ``out`` or ``presence``."""
    entry: dict[str, Any]
    """The entry as received (a presence line: the diff, with the local time it arrived as ``t``)."""
    text: Text = field(compare=False)


def traffic_lines(payload: dict[str, Any], now: float) -> list[TrafficLine]:
    """The lines of one ``traffic`` batch: its entries, then its presence diffs (timed ``now``)."""
    lines = []
    for entry in payload.get("entries", []):
        if isinstance(entry, dict):
            kind = "in" if entry.get("dir") == "in" else "out"
            lines.append(TrafficLine(str(entry.get("topic", "")), kind, entry, _entry_text(entry)))
    for diff in payload.get("presence", []):
        if isinstance(diff, dict):
            timed = {"t": now, **diff}
            lines.append(TrafficLine(str(diff.get("topic", "")), "presence", timed, _presence_text(timed)))
    return lines


class TrafficLog(ScrollView, can_focus=True):
    """The admin plane's traffic tail, one line per entry, with pause, a topic filter and a cursor.

    While paused the view stands still and new lines are held (at most ``PAUSE_LINES``; older
    ones are dropped and counted), then shown on resume. The filter applies to every kept line.
    The cursor follows the newest line until the user moves it; Enter opens the line under it.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First line", show=False),
        Binding("end", "follow", "Follow the newest line", show=False),
        Binding("enter", "open", "Open the line"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"traffic-log--cursor"}
    DEFAULT_CSS = """
    TrafficLog > .traffic-log--cursor { background: $surface-lighten-2; }
    TrafficLog:focus > .traffic-log--cursor { background: $accent 50%; }
    """

    paused: reactive[bool] = reactive(False)
    topic_filter: reactive[str] = reactive("")
    """Show only lines whose topic contains this text (empty: all)."""

    class Opened(Message):
        """The user asked to see ``line`` whole."""

        def __init__(self, line: TrafficLine) -> None:
            super().__init__()
            self.line = line

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_dropped = 0
        """Entries the server's tap sampled out (``dropped``, since it started)."""
        self.muted: frozenset[str] = frozenset()
        """Topics never shown (the dashboard's own ``inspect`` commands would fill the log)."""
        self.kept: deque[TrafficLine] = deque(maxlen=MAX_LINES)
        """Every line received and not muted, shown or filtered out."""
        self.held: deque[TrafficLine] = deque(maxlen=PAUSE_LINES)
        """Lines that arrived while paused, shown on resume."""
        self.held_dropped = 0
        """Lines that arrived while paused after ``held`` was full."""
        self.shown: list[TrafficLine] = []
        """The kept lines that pass the filter, in order: what the view draws."""
        self.cursor: int | None = None
        """Index into ``shown`` of the line under the cursor; ``None`` follows the newest line."""
        self._width = 0

    # -- data --------------------------------------------------------------------------------

    def add_batch(self, payload: dict[str, Any], now: float) -> None:
        """Append one ``traffic`` batch (its entries, then its presence diffs, timed ``now``)."""
        dropped = payload.get("dropped")
        if isinstance(dropped, int):
            self.server_dropped = dropped
        lines = [line for line in traffic_lines(payload, now) if line.topic not in self.muted]
        if self.paused:
            overflow = len(self.held) + len(lines) - PAUSE_LINES
            self.held_dropped += max(overflow, 0)
            self.held.extend(lines)
        else:
            self._append(lines)
        self._update_subtitle()

    def _append(self, lines: list[TrafficLine]) -> None:
        self.kept.extend(lines)
        wanted = [line for line in lines if self._wanted(line)]
        if not wanted:
            return
        self.shown.extend(wanted)
        excess = len(self.shown) - MAX_LINES
        if excess > 0:
            del self.shown[:excess]
            if self.cursor is not None:
                self.cursor = max(self.cursor - excess, 0)
                self.scroll_to(y=max(self.scroll_offset.y - excess, 0), animate=False, immediate=True, force=True)
        self._width = max(self._width, *(line.text.cell_len for line in wanted))
        self._resize()

    def _wanted(self, line: TrafficLine) -> bool:
        return not self.topic_filter or self.topic_filter in line.topic

    def _refilter(self) -> None:
        self.shown = [line for line in self.kept if self._wanted(line)]
        self._width = max((line.text.cell_len for line in self.shown), default=0)
        self.cursor = None
        self._resize()

    def _resize(self) -> None:
        self.virtual_size = Size(self._width, len(self.shown))
        if self.cursor is None:
            self.scroll_end(animate=False, x_axis=False, force=True)  # after the layout: the height may change
        self.refresh()

    def on_resize(self) -> None:
        if self.cursor is None:
            self.scroll_end(animate=False, x_axis=False, force=True)  # after the layout: the height may change

    def texts(self) -> list[str]:
        """The plain text of the shown lines (what a reader of the screen can scroll through)."""
        return [line.text.plain for line in self.shown]

    # -- reactive state ----------------------------------------------------------------------

    def watch_paused(self, paused: bool) -> None:
        if not paused and self.held:
            held, self.held = list(self.held), deque(maxlen=PAUSE_LINES)
            self._append(held)
        if not paused:
            self.held_dropped = 0
        self._update_subtitle()

    def watch_topic_filter(self) -> None:
        self._refilter()
        self._update_subtitle()

    def _update_subtitle(self) -> None:
        parts = [Text(f"dropped by the server: {self.server_dropped}")]
        if self.topic_filter:
            parts.append(Text("filter: ") + plain(self.topic_filter))
        if self.paused:
            held = sum(map(self._wanted, self.held))
            note = f"PAUSED, {held} held" + (f", {self.held_dropped} dropped" if self.held_dropped else "")
            parts.append(Text(note, style="bold"))
        self.border_subtitle = Text(" · ").join(parts)

    # -- drawing -----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self.rich_style
        if index >= len(self.shown):
            return Strip.blank(width, style)
        text = self.shown[index].text
        strip = Strip(list(Segment.apply_style(text.render(self.app.console), style)), text.cell_len)
        strip = strip.crop_extend(scroll_x, scroll_x + width, style)
        if index == self._cursor_index():
            strip = strip.apply_style(self.get_component_rich_style("traffic-log--cursor"))
        return strip

    def _cursor_index(self) -> int:
        return len(self.shown) - 1 if self.cursor is None else self.cursor

    def current(self) -> TrafficLine | None:
        """The line under the cursor (the newest while following), ``None`` if nothing is shown."""
        return self.shown[self._cursor_index()] if self.shown else None

    # -- the user ----------------------------------------------------------------------------

    def _move_to(self, index: int | None) -> None:
        self.cursor = None if index is None else min(max(index, 0), max(len(self.shown) - 1, 0))
        if self.cursor is None:
            self.scroll_end(animate=False, x_axis=False, force=True)  # after the layout: the height may change
        else:
            height = self.scrollable_content_region.height
            top = self.scroll_offset.y
            if self.cursor < top:
                self.scroll_to(y=self.cursor, animate=False, immediate=True, force=True)
            elif self.cursor >= top + height:
                self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True, force=True)
        self.refresh()

    def action_cursor(self, step: int) -> None:
        self._move_to(self._cursor_index() + step)

    def action_page(self, step: int) -> None:
        self._move_to(self._cursor_index() + step * max(self.scrollable_content_region.height - 1, 1))

    def action_first(self) -> None:
        self._move_to(0)

    def action_follow(self) -> None:
        self._move_to(None)

    def action_open(self) -> None:
        line = self.current()
        if line is not None:
            self.post_message(self.Opened(line))


def _entry_text(entry: dict[str, Any]) -> Text:
    """``time dir topic event user size payload``; ``out`` shows its recipient count as the user."""
    direction = entry.get("dir")
    who = f"u:{entry.get('user')}" if direction == "in" else f"→{entry.get('recipients')}"
    return Text.assemble(
        (clock(entry.get("t")), "dim"), " ",
        plain(f"{direction!s:<3}", "cyan" if direction == "in" else "magenta"), " ",
        plain(entry.get("topic"), "bold"), " ",
        plain(entry.get("event"), "yellow"), " ",
        plain(who), " ",
        (f"{entry.get('size')}B", "dim"), " ",
        plain(entry.get("payload")),
    )


def _presence_text(diff: dict[str, Any]) -> Text:
    joins, leaves = diff.get("joins"), diff.get("leaves")
    keys = diff_keys(joins if isinstance(joins, dict) else {}, leaves if isinstance(leaves, dict) else {})
    return Text.assemble(
        (clock(diff.get("t")), "dim"), " ", ("pre", "green"), " ", plain(diff.get("topic"), "bold"), " ",
        ("presence_diff", "yellow"), " ", plain(keys.describe()),
        *((" (metas cut)", "dim"),) if diff.get("cut_bytes") else (),
    )
