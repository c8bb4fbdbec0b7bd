"""The selected topic: who is present (its presence list) and which sockets are subscribed."""

from __future__ import annotations

from typing import Any

import orjson
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from chanctl.tui.text import clock, expires, plain

__all__ = ["PresenceList", "SubscriberTable"]


_HIDDEN_META = ("phx_ref", "phx_ref_prev", "online_at")
"""Meta fields not shown as JSON: refs mean nothing to a reader, and ``online_at`` has its own column."""


class PresenceList(DataTable[Any]):
    """One row per presence key: how many metas (sockets, tabs) it has, since when it is online
    (its oldest meta's ``online_at``, as a time of day) and the newest meta's other fields."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)

    def on_mount(self) -> None:
        self.add_column("key", key="key")
        self.add_column("metas", key="metas")
        self.add_column("online", key="online")
        self.add_column("meta", key="meta")

    def show(self, presence: dict[str, Any], cut: Any = None) -> None:
        """Replace the rows with ``presence`` (Phoenix's ``{key: {metas: [...]}}``); the cursor stays on its key.

        ``cut`` is an ``inspect`` reply's ``presence_cut`` (``{bytes, keys}``): the server sent only
        some keys, each with ``metas_cut`` (its number of metas) instead of its metas. Such a key
        shows its count and "cut", and the border says how many keys were not sent, so a capped
        list never reads as members without metas, or as everyone.
        """
        keys = sorted(presence)
        current = _cursor_value(self, [key.value for key in self.rows])
        self.clear()
        for key in keys:
            entry = presence[key] if isinstance(presence[key], dict) else {}
            metas = [meta for meta in entry.get("metas", []) if isinstance(meta, dict)] if isinstance(entry.get("metas"), list) else []
            metas_cut = entry.get("metas_cut")
            if isinstance(metas_cut, int) and not metas:
                self.add_row(plain(key), metas_cut, "-", Text("metas cut", "dim"), key=key)
                continue
            newest = {k: v for k, v in (metas[-1] if metas else {}).items() if k not in _HIDDEN_META}
            since = min((m["online_at"] for m in metas if isinstance(m.get("online_at"), (int, float))), default=None)
            self.add_row(plain(key), len(metas), clock(since, millis=False),
                         plain(orjson.dumps(newest, option=orjson.OPT_NON_STR_KEYS).decode()), key=key)
        if current in keys:
            self.move_cursor(row=keys.index(current))
        self.border_subtitle = _cut_note(len(keys), cut.get("keys") if isinstance(cut, dict) else None, cut is not None)


class SubscriberTable(DataTable[Any]):
    """The sockets subscribed to the selected topic, with the time left on each one's token (counted
    down by :meth:`tick`); ``d`` asks to disconnect the highlighted one."""

    BINDINGS = [Binding("d", "disconnect", "Disconnect socket")]

    class DisconnectRequested(Message):
        """The user asked to close every socket of ``socket_id``."""

        def __init__(self, socket_id: str) -> None:
            super().__init__()
            self.socket_id = socket_id

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self._ids: list[Any] = []
        """The socket id of each row, in row order."""
        self._expiry: dict[str, Any] = {}
        """Each row's ``expires_at`` by row key."""

    def on_mount(self) -> None:
        self.add_column("socket", key="socket")
        self.add_column("user", key="user")
        self.add_column("remote", key="remote")
        self.add_column("expires", key="expires")

    def show(self, subscribers: list[dict[str, Any]], total: Any = None) -> None:
        """Replace the rows with the ``subscribers`` of an ``inspect`` reply.

        The cursor stays on its socket, so that a refresh never moves ``d`` to someone else.
        ``total`` (the reply's ``subscribers_total``) past the rows shown is said on the border:
        the server caps the list.
        """
        current = _cursor_value(self, self._ids)
        self.clear()
        now = self.app.clock()
        self._expiry = {}
        for number, subscriber in enumerate(subscribers):
            socket_id, key = subscriber.get("socket_id"), f"{number}:{subscriber.get('socket_id')}"
            self._expiry[key] = subscriber.get("expires_at")
            self.add_row(plain(socket_id), plain(subscriber.get("user")), plain(subscriber.get("remote")),
                         expires(self._expiry[key], now), key=key)
        self._ids = [s.get("socket_id") for s in subscribers]
        if current is not None and current in self._ids:
            self.move_cursor(row=self._ids.index(current))
        self.border_subtitle = _cut_note(len(subscribers), total, False)

    def tick(self) -> None:
        """Count the time to expiry down (the dashboard calls it with each ``stats``, once a second)."""
        now = self.app.clock()
        for key, expires_at in self._expiry.items():
            if expires_at is not None:
                self.update_cell(key, "expires", expires(expires_at, now))

    def action_disconnect(self) -> None:
        socket_id = _cursor_value(self, self._ids)
        if isinstance(socket_id, str):
            self.post_message(self.DisconnectRequested(socket_id))
        else:
            self.notify("no socket selected (anonymous sockets have no id)", severity="warning")


def _cut_note(shown: int, total: Any, metas_cut: bool) -> str:
    """A table's border subtitle when the server sent only part of a list: how many more there are
    (``total`` past ``shown``), and whether metas were cut; empty when the list is whole. Short, to
    fit a panel at 80 columns."""
    more = total - shown if isinstance(total, int) and not isinstance(total, bool) and total > shown else 0
    parts = [f"… {more:,} more not shown"] if more else []
    if metas_cut:
        parts.append("metas cut")
    return ", ".join(parts)


def _cursor_value(table: DataTable[Any], values: list[Any]) -> Any:
    """The value for the row under ``table``'s cursor, from ``values`` in row order (None if no row)."""
    row = table.cursor_row
    return values[row] if 0 <= row < len(values) else None
