"""Cluster: the nodes that share one Redis act, to clients and to ``chanctl watch``, as one server.

:class:`~chanctl.pubsub.redis.RedisPubSub` carries broadcasts; this module adds what needs the
server: telling the channels of topics that may have missed broadcasts (``phx_error``, so that
phoenix.js rejoins) after Redis came back, and the node's health.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from chanctl.config.model import ClusterConfig
from chanctl.pubsub.redis import RedisPubSub

if TYPE_CHECKING:
    from chanctl.server.runtime import ChannelServer

__all__ = ["Cluster"]

log = logging.getLogger("chanctl.cluster")


class Cluster:
    """This node's part in a cluster.

    Args:
        server: the node.
        config: its ``cluster:`` section.
        pubsub: the server's pubsub, which carries broadcasts through Redis.
    """

    def __init__(self, server: ChannelServer, config: ClusterConfig, pubsub: RedisPubSub):
        self.server = server
        self.config = config
        self.pubsub = pubsub
        pubsub.on_connect.append(self._connected)

    async def start(self) -> None:
        await self.pubsub.start()

    async def close(self) -> None:
        await self.pubsub.close()

    def health(self) -> dict[str, Any]:
        return {"redis": "ok" if self.pubsub.connected else "unreachable"}

    def metrics(self) -> Iterator[Metric]:
        """The cluster's families for ``/metrics``."""
        pubsub = self.pubsub
        yield GaugeMetricFamily("chanctl_cluster_redis_up", "1 while Redis is reachable, else 0.", value=int(pubsub.connected))
        yield CounterMetricFamily("chanctl_cluster_published", "Messages published to Redis.", value=pubsub.published)
        yield CounterMetricFamily("chanctl_cluster_dropped", "Broadcasts dropped: cluster.max_pending bytes already waited for Redis.",
                                  value=pubsub.dropped)
        yield CounterMetricFamily("chanctl_cluster_reconnects", "Reconnections to Redis after it was lost.", value=pubsub.reconnects)

    def _connected(self, missed: set[str]) -> None:
        """Redis is back: the channels of ``missed`` topics may lack broadcasts; phoenix.js rejoins
        a channel that errors, and the rejoin brings a fresh ``presence_state``."""
        failed = 0
        for topic in missed:
            for connection, channel in self.pubsub.subscriptions(topic):
                connection.fail(channel)
                failed += 1
        if failed:
            log.warning("told %d channels on %d topics to rejoin: they may have missed broadcasts while Redis was away",
                        failed, len(missed))
