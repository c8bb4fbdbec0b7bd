"""Nodes of one cluster, served in process against the test's own redis-server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from chanctl.config.load import load_config_text
from chanctl.server.runtime import ChannelServer, build_server
from tests.support import SECRET, RedisServer

APP = """
auth:
  secret: ${CHANCTL_SECRET}
server:
  rate_limit: null
topics:
  "room:{id}":
    join: true
    presence: {batch: 0}
    events:
      shout: {do: broadcast}
      shout_from: {do: broadcast_from}
  "plain:{id}":
    join: true
    events:
      shout: {do: broadcast}
"""


def cluster_yaml(redis: RedisServer, node: str, extra: str = "") -> str:
    return APP + f"cluster:\n  redis: {redis.url}\n  node: {node}\n{extra}"


@pytest.fixture
def start_node(redis_server: RedisServer) -> Callable[..., contextlib.AbstractAsyncContextManager[ChannelServer]]:
    """``async with start_node("a") as a``: a node of the test's cluster on a free port."""

    @contextlib.asynccontextmanager
    async def start(node: str, extra: str = "", yaml: str | None = None) -> AsyncIterator[ChannelServer]:
        text = yaml if yaml is not None else cluster_yaml(redis_server, node, extra)
        loaded = load_config_text(text, "<test>", {"CHANCTL_SECRET": SECRET})
        async with build_server(loaded, host="127.0.0.1", port=0) as server:
            yield server

    return start


@pytest.fixture
async def two_nodes(start_node) -> AsyncIterator[tuple[ChannelServer, ChannelServer]]:
    async with start_node("a") as a, start_node("b") as b:
        yield a, b
