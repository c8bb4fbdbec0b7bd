"""One traffic line, whole: every field of the entry and its payload, pretty-printed."""

from __future__ import annotations

from typing import Any

import orjson
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from chanctl.tui.text import clock, plain
from chanctl.tui.widgets.traffic import TrafficLine

__all__ = ["EntryScreen"]


class EntryScreen(ModalScreen[None]):
    """Shows a :class:`TrafficLine` whole; Escape, Enter or q closes it."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, line: TrafficLine) -> None:
        super().__init__()
        self.line = line

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="entry"):
            yield Static(entry_text(self.line))

    def on_mount(self) -> None:
        scroll = self.query_one("#entry", VerticalScroll)
        scroll.border_title = Text(f"{self.line.kind} ") + plain(self.line.topic)
        scroll.border_subtitle = "Esc: close"
        scroll.focus()

    def action_close(self) -> None:
        self.dismiss(None)


_FIELDS = ("dir", "topic", "event", "user", "recipients", "size")
_LABEL = max(map(len, _FIELDS)) + 1
"""The width of a field's name column: the longest name and a space, so no value touches its name."""


def entry_text(line: TrafficLine) -> Text:
    """The fields, one per line, then the payload (or the presence diff) as indented JSON; every
    line escaped, since all of it came from clients."""
    entry = line.entry
    rows: list[Text] = [Text.assemble((f"{'time':<{_LABEL}}", "dim"), clock(entry.get("t")))]
    if line.kind == "presence":
        body = {"joins": entry.get("joins") or {}, "leaves": entry.get("leaves") or {}}
        rows.append(Text("presence_diff", style="yellow"))
        rows += _json_lines(body)
        return Text("\n").join(rows)
    for name in _FIELDS:
        if entry.get(name) is not None:
            rows.append(Text.assemble((f"{name:<{_LABEL}}", "dim"), plain(entry.get(name))))
    payload = entry.get("payload")
    rows.append(Text("payload", style="dim"))
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    try:
        rows += _json_lines(orjson.loads(text))
    except orjson.JSONDecodeError:
        rows += [plain(part) for part in text.split("\n")]
    size = entry.get("size")
    if text.endswith("…") and isinstance(size, int) and size > len(text) - 1:
        rows.append(Text(f"(the server's tail keeps the first {len(text) - 1} of {size} characters)", style="italic"))
    return Text("\n").join(rows)


def _json_lines(value: Any) -> list[Text]:
    pretty = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    return [plain(part) for part in pretty.split("\n")]
