"""The dashboard: joins ``chanctl:admin`` in a worker and turns what arrives into widget updates.

Network I/O happens only in workers (the feed, ``inspect`` and ``disconnect``), which post messages
(:mod:`chanctl.tui.messages`); the handlers here only set widget attributes. One
``Worker.StateChanged`` handler deals with every worker's failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input
from textual.worker import Worker, WorkerState

from chanctl.client import Client, ClientChannel
from chanctl.client.protocol import Open, Refused, Rejoined, Status as ClientStatus
from chanctl.errors import ClientError, ConnectRefused, JoinRefused
from chanctl.protocol.messages import ADMIN_TOPIC, PHX_CLOSE
from chanctl.tui.messages import Connecting, Disconnected, Inspected, Snapshot, Stats, Status, Traffic
from chanctl.tui.rates import ServerSeries, TopicRates
from chanctl.tui.screens.confirm import ConfirmScreen
from chanctl.tui.screens.entry import EntryScreen
from chanctl.tui.text import escape, plain
from chanctl.tui.widgets import (
    ConnectionState,
    Graph,
    PresenceList,
    StatsHeader,
    SubscriberTable,
    TopicTable,
    TrafficLog,
)

if TYPE_CHECKING:
    from chanctl.tui.app import WatchApp

__all__ = ["DashboardScreen"]

_FEED_EVENTS = {"snapshot": Snapshot, "stats": Stats, "traffic": Traffic}


def client_status(event: ClientStatus) -> Status:
    """The one place that reads the client's status: a reconnect or a rejoin keeps the state (the
    next snapshot makes the screen live), a final refusal (403) is final; anything else means the
    figures are going stale."""
    if isinstance(event, Refused) and event.final:
        return Status(str(event), state="refused")
    recovered = isinstance(event, (Open, Rejoined))
    return Status(str(event), state=None if recovered else "reconnecting")


class FilterInput(Input):
    """The traffic filter: applied as it is typed, Enter keeps it, Escape puts back the one before."""

    BINDINGS = [Binding("escape", "cancel", "Cancel the filter edit")]

    class Closed(Message):
        """The user finished with the field; ``value`` is the filter to keep."""

        def __init__(self, value: str) -> None:
            super().__init__()
            self.value = value

    def __init__(self, **kwargs: Any) -> None:
        # Reopened, the field shows the current filter with the cursor after it: a key typed then
        # edits the filter instead of replacing it whole (Textual selects all on focus by default).
        super().__init__(select_on_focus=False, **kwargs)
        self.before = ""
        """The filter when the field was opened: what Escape restores."""

    def action_cancel(self) -> None:
        self.post_message(self.Closed(self.before))


class DashboardScreen(Screen[None]):
    """Header, connection state, topics, the selected topic's presence and subscribers, traffic."""

    BINDINGS = [
        Binding("p", "pause", "Pause traffic"),
        Binding("slash", "filter", "Filter by topic"),
        Binding("question_mark", "keys", "Keys"),
    ]

    app: WatchApp

    def __init__(self, url: str, token: str, timeout: float) -> None:
        super().__init__()
        self.url = url
        self.token = token
        self.timeout = timeout
        self.channel: ClientChannel | None = None
        """The joined admin channel, once the feed has joined it."""
        self.live = False
        """A snapshot arrived at least once: failures from now on are not start-up failures."""
        self.selected: str | None = None
        self._selected_counts: Any = None
        self.series = ServerSeries()
        """The server's rates and connections over the last minute and a half (``stats``)."""
        self.rates = TopicRates()
        """Per-topic rates, from the traffic tail."""

    def compose(self) -> ComposeResult:
        yield StatsHeader(id="header")
        with Horizontal(id="graphs"):
            yield Graph("in", "cyan", id="graph-in")
            yield Graph("out", "magenta", id="graph-out")
            yield Graph("bcast", "yellow", id="graph-broadcasts")
            yield Graph("conns", "green", id="graph-connections")
        yield ConnectionState(id="state")
        with Horizontal(id="main"):
            with Vertical(id="topics-panel"):
                yield TopicTable(id="topics")
                with Horizontal(id="topic-graphs"):
                    yield Graph("in", "cyan", id="topic-in")
                    yield Graph("out", "magenta", id="topic-out")
            with Vertical(id="detail"):
                yield PresenceList(id="presence")
                yield SubscriberTable(id="subscribers")
        yield TrafficLog(id="traffic")
        yield FilterInput(placeholder="show traffic of topics containing… (Enter: keep, Esc: cancel)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.on_topic_table_sorted(TopicTable.Sorted(self.query_one(TopicTable).order))
        self.query_one(PresenceList).border_title = "presence"
        self.query_one(SubscriberTable).border_title = "subscribers (d: disconnect)"
        self.query_one(TrafficLog).border_title = "traffic (p: pause, /: filter, Enter: open, ?: keys)"
        self.query_one(TrafficLog).muted = frozenset({ADMIN_TOPIC})
        self.query_one(TopicTable).focus()
        self.feed()

    # -- workers: the only network I/O ------------------------------------------------------

    @work(exclusive=True, group="feed", exit_on_error=False)
    async def feed(self) -> None:
        """Join the admin plane and post every event; the client reconnects and rejoins by itself."""
        self.post_message(Connecting(self.url))

        def status(event: ClientStatus) -> None:
            if not event.routine:
                self.post_message(client_status(event))

        async with Client(self.url, token=self.token, timeout=self.timeout, on_status=status) as client:
            channel = client.channel(ADMIN_TOPIC)
            await channel.join(self.timeout)
            self.channel = channel
            async for event in channel.events():
                kind = _FEED_EVENTS.get(getattr(event, "event", ""))
                payload = getattr(event, "payload", None)
                if kind is not None and isinstance(payload, dict):
                    self.post_message(kind(payload))
                elif getattr(event, "event", None) == PHX_CLOSE:
                    self.post_message(Status("the server closed the admin channel", state="closed"))
                    return

    @work(exclusive=True, group="inspect", exit_on_error=False)
    async def inspect(self, topic: str) -> None:
        """Ask for ``topic``'s subscribers and presence list; a newer request cancels this one."""
        if self.channel is None:
            return
        reply = await self.channel.push("inspect", {"topic": topic}, self.timeout)
        if reply.status == "ok" and isinstance(reply.response, dict):
            self.post_message(Inspected(reply.response))
        else:
            raise ClientError(f"inspect {topic}: {reply.response}")

    @work(group="command", exit_on_error=False)
    async def disconnect(self, socket_id: str) -> None:
        """Close every socket with ``socket_id`` (the server replies with how many)."""
        if self.channel is None:
            return
        reply = await self.channel.push("disconnect", {"socket_id": socket_id}, self.timeout)
        if reply.status != "ok" or not isinstance(reply.response, dict):
            raise ClientError(f"disconnect {socket_id}: {reply.response}")
        self.post_message(Disconnected(socket_id, int(reply.response.get("closed", 0))))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures land: at start-up they end the app, later they are shown."""
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        state = self.query_one(ConnectionState)
        # At start-up any client error ends the app; later only a refusal no retry can heal (403 on
        # reconnect: the token expired or was revoked), which the client reports by giving up.
        if event.worker.group == "feed" and isinstance(error, ClientError) and (not self.live or isinstance(error, ConnectRefused)):
            state.state = "refused" if isinstance(error, (ConnectRefused, JoinRefused)) else "unreachable"
            state.detail = str(error)
            self.app.fail(error)
            return
        message = str(error) if isinstance(error, ClientError) else f"{type(error).__name__}: {error}"
        if event.worker.group == "feed":
            state.state, state.detail = "error", message
            self._stale()
        self.app.notify(escape(message), title=f"{event.worker.group} failed", severity="error", markup=False)

    # -- messages from the workers ----------------------------------------------------------

    def on_connecting(self, message: Connecting) -> None:
        state = self.query_one(ConnectionState)
        state.state, state.detail = "connecting", message.url

    def on_status(self, message: Status) -> None:
        state = self.query_one(ConnectionState)
        if message.state is not None:
            state.state = message.state  # "live" again with the next snapshot
            self._stale()
        state.detail = message.text

    def _stale(self) -> None:
        """What the screen shows is no longer current: say so until the next snapshot."""
        if self.live and not self.has_class("stale"):
            self.add_class("stale")
            self.query_one(ConnectionState).stale_since = self.app.clock()

    def on_snapshot(self, message: Snapshot) -> None:
        self.live = True
        payload = message.payload
        state = self.query_one(ConnectionState)
        state.state, state.detail, state.stale_since = "live", self.url, None
        self.remove_class("stale")
        header = self.query_one(StatsHeader)
        nodes = [n for n in payload.get("nodes", []) if isinstance(n, dict)]
        if nodes:
            header.node = str(nodes[0].get("name", "?"))
            uptime = nodes[0].get("uptime")
            header.started = self.app.clock() - uptime if isinstance(uptime, (int, float)) else None
        topics = payload.get("topics")
        if isinstance(topics, dict):
            self.query_one(TopicTable).update_topics(topics)
        if self.selected is not None:
            self.inspect(self.selected)

    def on_stats(self, message: Stats) -> None:
        stats = message.payload
        self.query_one(StatsHeader).stats = stats
        self.query_one(SubscriberTable).tick()
        self.series.add(stats)
        self.rates.tick(stats.get("t"))
        for name, key, unit in (("in", "messages_in_per_s", "/s"), ("out", "messages_out_per_s", "/s"),
                                ("broadcasts", "broadcasts_per_s", "/s"), ("connections", "connections", "")):
            graph = self.query_one(f"#graph-{name}", Graph)
            graph.values, graph.value = tuple(self.series.values[key]), f"{stats.get(key, 0)}{unit}"
        by_topic = stats.get("by_topic")
        if isinstance(by_topic, dict):
            table = self.query_one(TopicTable)
            table.update_topics(by_topic, self.rates.rates, self.rates.quiet)
            for topic in [t for t in self.rates.history if t not in table.topics]:
                self.rates.forget(topic)
            self._show_topic_graphs()
            counts = by_topic.get(self.selected)
            if self.selected is not None and counts != self._selected_counts:
                self._selected_counts = counts
                self.inspect(self.selected)  # a subscriber came or went without a presence diff

    def _show_topic_graphs(self) -> None:
        """The selected topic's rates over time, under the topic table."""
        history = list(self.rates.history.get(self.selected or "", ()))
        for index, name in enumerate(("in", "out")):
            graph = self.query_one(f"#topic-{name}", Graph)
            graph.values = tuple(rate[index] for rate in history)
            graph.value = f"{history[-1][index]:.1f}/s" if history else "-"
        self.query_one("#topics-panel").border_subtitle = plain(self.selected or "")

    def on_traffic(self, message: Traffic) -> None:
        self.rates.add_batch(message.payload)
        self.query_one(TrafficLog).add_batch(message.payload, self.app.clock())
        diffs = message.payload.get("presence", [])
        if self.selected is not None and any(isinstance(d, dict) and d.get("topic") == self.selected for d in diffs):
            self.inspect(self.selected)

    def on_inspected(self, message: Inspected) -> None:
        payload = message.payload
        if payload.get("topic") != self.selected:
            return  # an answer about a topic the user has moved away from
        presence, subscribers = payload.get("presence"), payload.get("subscribers")
        self.query_one(PresenceList).show(presence if isinstance(presence, dict) else {}, payload.get("presence_cut"))
        self.query_one(SubscriberTable).show(subscribers if isinstance(subscribers, list) else [], payload.get("subscribers_total"))

    def on_disconnected(self, message: Disconnected) -> None:
        self.app.notify(escape(f"closed {message.closed} socket(s) of {message.socket_id}"), markup=False)

    # -- the user ---------------------------------------------------------------------------

    def on_topic_table_selected(self, message: TopicTable.Selected) -> None:
        if message.topic == self.selected:
            return
        self.selected = message.topic
        self._selected_counts = None
        self._show_topic_graphs()
        self.query_one(PresenceList).border_title = Text("presence of ") + plain(message.topic)
        self.query_one(SubscriberTable).border_title = Text("subscribers of ") + plain(message.topic) + " (d: disconnect)"
        self.inspect(message.topic)

    def on_topic_table_sorted(self, message: TopicTable.Sorted) -> None:
        arrow = "A-Z" if message.order == "topic" else "↓"
        self.query_one("#topics-panel").border_title = f"topics by {message.order} {arrow} (s: sort)"

    def on_subscriber_table_disconnect_requested(self, message: SubscriberTable.DisconnectRequested) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.disconnect(message.socket_id)

        self.app.push_screen(ConfirmScreen(f"Disconnect every socket of {message.socket_id}?"), answered)

    def action_pause(self) -> None:
        traffic = self.query_one(TrafficLog)
        traffic.paused = not traffic.paused

    def action_keys(self) -> None:
        """Show (or hide) the keys of the focused panel and of the screen, beside the dashboard."""
        if self.query("HelpPanel"):
            self.app.action_hide_help_panel()
        else:
            self.app.action_show_help_panel()

    def on_traffic_log_opened(self, message: TrafficLog.Opened) -> None:
        self.app.push_screen(EntryScreen(message.line))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While the filter field has the keyboard, ``/``, ``p`` and ``?`` are text typed into it."""
        if action in ("filter", "pause", "keys") and self.query_one(FilterInput).has_focus:
            return False
        return True

    def action_filter(self) -> None:
        field = self.query_one(FilterInput)
        field.before = field.value = self.query_one(TrafficLog).topic_filter
        field.cursor_position = len(field.value)
        field.add_class("visible")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.has_class("visible"):
            self.query_one(TrafficLog).topic_filter = event.value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._close_filter(event.value)

    def on_filter_input_closed(self, event: FilterInput.Closed) -> None:
        self._close_filter(event.value)

    def _close_filter(self, value: str) -> None:
        field = self.query_one(FilterInput)
        field.remove_class("visible")
        self.query_one(TrafficLog).topic_filter = value.strip()
        self.query_one(TrafficLog).focus()
