"""The dashboard's widgets; each owns one piece of data, set by the screen."""

from chanctl.tui.widgets.graph import Graph
from chanctl.tui.widgets.presence import PresenceList, SubscriberTable
from chanctl.tui.widgets.status import ConnectionState, StatsHeader
from chanctl.tui.widgets.topics import TopicTable
from chanctl.tui.widgets.traffic import TrafficLog

__all__ = ["ConnectionState", "Graph", "PresenceList", "StatsHeader", "SubscriberTable", "TopicTable", "TrafficLog"]
