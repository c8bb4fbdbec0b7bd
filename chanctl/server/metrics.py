"""``GET /metrics``: Prometheus exposition of counters the runtime already keeps.

Nothing on the per-message path touches prometheus-client: the runtime increments plain ints
(:class:`~chanctl.server.runtime.ServerStats`) and a custom collector turns them into metric
families when a scrape arrives, so the cost of metrics is paid per scrape, not per message.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from chanctl import __version__

if TYPE_CHECKING:
    from chanctl.server.runtime import ChannelServer

__all__ = ["LatencyHistogram", "ServerCollector", "render_metrics"]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the handler latency buckets: 100 µs to 5 s."""


class LatencyHistogram:
    """A fixed-bucket histogram: one bisect and two additions per observation."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` pairs ending with ``+Inf``, Prometheus's shape."""
        total, out = 0, []
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


def _labelled(name: str, doc: str, label: str, counts: Counter[str] | Counter[int | None]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items(), key=lambda item: str(item[0])):
        family.add_metric(["none" if key is None else str(key)], value)
    return family


class ServerCollector:
    """Reads one server's counters at scrape time."""

    def __init__(self, server: ChannelServer):
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server, stats = self.server, self.server.stats
        # The node's name as an info metric (Prometheus's convention), so that a query can join
        # any series of this target to it, e.g. across the nodes of a cluster.
        info = GaugeMetricFamily("chanctl_node_info", "This node: its name and version.", labels=["node", "version"])
        info.add_metric([server.node, __version__], 1)
        yield info
        if server.cluster is not None:
            yield from server.cluster.metrics()
        yield GaugeMetricFamily("chanctl_uptime_seconds", "Seconds since the server started.",
                                value=time.time() - server.started_at)
        yield GaugeMetricFamily("chanctl_connections", "Open connections.", value=len(server.connections))
        # A task that outlives its connection is a leak no other figure shows (the soak watches it).
        yield GaugeMetricFamily("chanctl_tasks", "Asyncio tasks alive in the server's event loop.",
                                value=len(asyncio.all_tasks()))
        yield CounterMetricFamily("chanctl_connections_opened", "Connections accepted.", value=stats.connections)
        yield CounterMetricFamily("chanctl_connections_refused", "Handshakes refused (bad token, vsn).",
                                  value=stats.refused)
        channels = GaugeMetricFamily("chanctl_channels", "Joined channels by topic pattern.", labels=["pattern"])
        by_pattern: Counter[str] = Counter()
        for connection in server.connections:
            for channel in connection.proto.channels.values():
                by_pattern[channel.route.pattern.source] += 1
        for pattern, count in sorted(by_pattern.items()):
            channels.add_metric([pattern], count)
        yield channels
        yield _labelled("chanctl_joins", "Join attempts by outcome.", "outcome", stats.joins)
        yield CounterMetricFamily("chanctl_messages_in", "Frames received from clients.", value=stats.messages_in)
        yield CounterMetricFamily("chanctl_messages_out", "Frames written to clients.", value=stats.messages_out)
        yield CounterMetricFamily("chanctl_broadcasts", "Broadcasts published.", value=server.pubsub.broadcasts)
        yield CounterMetricFamily("chanctl_received_bytes", "Bytes of frames received.", value=stats.bytes_in)
        yield CounterMetricFamily("chanctl_sent_bytes", "Bytes of frames written.", value=stats.bytes_out)
        yield _labelled("chanctl_replies", "Handler replies by status.", "status", stats.replies)
        yield _labelled("chanctl_closes", "Ended connections by close code.", "code", stats.closes)
        yield CounterMetricFamily("chanctl_slow_consumers", "Connections closed for not reading (1013).",
                                  value=stats.slow_consumers)
        limited = CounterMetricFamily("chanctl_rate_limited", "Client messages refused by a rate limit.",
                                      labels=["limit"])
        limited.add_metric(["messages"], stats.protocol.rate_limited)
        limited.add_metric(["presence_updates"], stats.presence.limited)
        yield limited
        refused = stats.protocol.refused + stats.over_limit
        refused["server.rate_limit"] += stats.protocol.rate_limited
        for topic in server.compiled.topics.values():
            refused.update(topic.limit_refusals)
        yield _labelled("chanctl_limit_refusals", "Joins, messages and connections refused by a size or count limit, "
                        "by setting.", "limit", refused)
        yield CounterMetricFamily("chanctl_disconnects", "Connections closed by server.disconnect (1001).",
                                  value=stats.disconnected)
        yield CounterMetricFamily("chanctl_protocol_violations", "Connections closed for malformed frames.",
                                  value=stats.protocol_violations)
        yield CounterMetricFamily("chanctl_http_pipelined_dropped", "HTTP connections whose client sent more after a "
                                  "request answered without an upgrade (one request per connection).",
                                  value=stats.pipelined_dropped)
        yield CounterMetricFamily("chanctl_stale_join_ref_dropped", "Client frames dropped for a stale join_ref.",
                                  value=stats.protocol.stale_dropped)
        yield CounterMetricFamily("chanctl_unmatched_topic", "Frames answered \"unmatched topic\".",
                                  value=stats.protocol.unmatched)
        sessions = stats.sessions
        refreshes = CounterMetricFamily("chanctl_token_refreshes", "access_token refreshes by outcome.", labels=["outcome"])
        for outcome, count in sorted(sessions.refreshes.items()):
            refreshes.add_metric([outcome], count)
        yield refreshes
        yield CounterMetricFamily("chanctl_token_warnings", "token_expiring warnings pushed.", value=sessions.warnings)
        yield CounterMetricFamily("chanctl_token_expired", "Sockets closed because their token expired (4401).",
                                  value=sessions.expired)
        yield CounterMetricFamily("chanctl_token_revocations", "Revocations applied (tokens and users).",
                                  value=sessions.revocations)
        yield CounterMetricFamily("chanctl_token_revoked_closed", "Sockets closed by a revocation (4403).",
                                  value=sessions.revoked_closed)
        yield CounterMetricFamily("chanctl_token_revoked_refused", "Handshakes and refreshes refused: token revoked.",
                                  value=sessions.revoked_refused)
        history = server.history
        if history is not None:
            yield CounterMetricFamily("chanctl_history_recoveries", "Joins with since that got every missed broadcast.",
                                      value=history.stats.recovered)
            yield CounterMetricFamily("chanctl_history_failed_recoveries",
                                      "Joins with since answered recovered: false (gap older than the history).",
                                      value=history.stats.failed)
            yield CounterMetricFamily("chanctl_history_replayed", "Broadcasts sent again to recovering joiners.",
                                      value=history.stats.replayed)
            yield GaugeMetricFamily("chanctl_history_topics", "Topics with a history kept.", value=history.topics())
        yield CounterMetricFamily("chanctl_memory_trims", "Times free heap pages were given back after closes.",
                                  value=stats.memory.trims)
        yield CounterMetricFamily("chanctl_memory_returned_bytes", "RSS given back by those trims.",
                                  value=stats.memory.returned_bytes)
        yield CounterMetricFamily("chanctl_memory_trim_seconds", "Event loop time those trims took.",
                                  value=stats.memory.seconds)
        latency = stats.handler_latency
        yield HistogramMetricFamily("chanctl_handler_latency_seconds", "Time spent in handle_in.",
                                    buckets=latency.cumulative(), sum_value=latency.sum)


def render_metrics(server: ChannelServer) -> tuple[bytes, str]:
    """The exposition text for one scrape, and its content type."""
    registry = CollectorRegistry(auto_describe=False)  # no describe(): registering does not collect
    registry.register(ServerCollector(server))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
