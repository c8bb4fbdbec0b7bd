"""A server shaped like PROTOCOL.md §10's assumptions, with a Python channel on ``room:*``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chanctl.channel import Channel, Outcome, error, ok
from chanctl.protocol.router import Router
from chanctl.protocol.socket import LeaveReason
from chanctl.server.runtime import ChannelServer

CONFORMANCE_YAML = """
server: {{origins: ["//example.com", "*.chanctl.dev"], max_channels: 5, max_frame_size: 4KiB{extra}}}
auth: {{secret: "${{CHANCTL_SECRET}}"}}
topics:
  "room:*": {{join: true}}
"""


class ConformanceChannel(Channel):
    """§10's channel: join takes orders from its params; ping echoes, boom raises, shout broadcasts."""

    terminated: asyncio.Queue[tuple[str, LeaveReason]]
    server: ChannelServer
    """What ``kick`` disconnects through, as the admin plane does."""

    async def join(self, params: Any) -> Outcome | None:
        params = params if isinstance(params, dict) else {}
        if params.get("crash"):
            raise RuntimeError("join crashed on purpose")
        if "refuse" in params:
            return error(params["refuse"])
        if params.get("push"):
            # Phoenix's idiom: pushes come after the join reply, from a later turn.
            asyncio.get_running_loop().call_soon(self.push, "joined", {"status": "connected"})
        if params.get("unencodable"):
            return ok({"when": object()})
        return ok(params.get("reply"))

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        if event == "ping":
            return ok(payload)
        if event == "boom":
            raise RuntimeError("boom on purpose")
        if event == "shout":
            self.broadcast("shout", payload)
            return ok()
        if event == "shout_from":
            self.broadcast_from("shout", payload)
            return ok()
        if event == "unencodable":  # a handler bug: the channel crashes, the socket lives
            return ok({"when": object()})
        if event == "bye":  # stop with a reply: the reply first, then phx_close (§10 item 25)
            self.stop()
            return ok({"bye": True})
        if event == "kick":  # the admin plane's disconnect, triggered from the client under test
            closed = self.server.disconnect(self.socket.socket_id)
            return ok({"closed": closed})
        if event == "bin":
            self.push("blob", payload)
            self.broadcast("blob", payload)
            return ok(payload + b"\x03\x04")
        return await super().handle_in(event, payload)

    async def terminate(self, reason: LeaveReason) -> None:
        self.terminated.put_nowait((self.topic, reason))


class InterceptingChannel(ConformanceChannel):
    """§10 item 32: ``shout`` is intercepted; the outgoing handler adds ``x``, or drops it."""

    intercept = ("shout", "crash_out")

    def handle_out(self, event: str, payload: Any) -> None:
        if event == "crash_out":
            raise RuntimeError("handle_out crashed on purpose")
        if not payload.get("drop"):
            self.push(event, {**payload, "x": 1})


@pytest.fixture
def conformance_server(make_server) -> Callable[..., ChannelServer]:
    """``async with conformance_server(idle_timeout=0.3) as server``: extra ``server:`` keys allowed."""

    def make(**server: Any) -> ChannelServer:
        extra = "".join(f", {key}: {value}" for key, value in server.items())
        built: ChannelServer = make_server(CONFORMANCE_YAML.format(extra=extra))
        built.router = Router()
        built.router.add("room:*", ConformanceChannel)
        built.router.add("intercept:*", InterceptingChannel)
        ConformanceChannel.terminated = asyncio.Queue()
        ConformanceChannel.server = built
        return built

    return make


@pytest.fixture
async def server(conformance_server) -> AsyncIterator[ChannelServer]:
    async with conformance_server() as running:
        yield running
