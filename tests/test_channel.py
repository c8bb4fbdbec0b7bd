"""chanctl.channel: what a handler sees of the server is its ChannelSocket, and nothing else."""

from __future__ import annotations

from typing import Any

from chanctl import Channel, ChannelSocket, PresenceError, ok
from chanctl.config.load import load_config_text
from chanctl.testing import ChannelHarness
from tests.support import SECRET

CONFIG = f"""
auth: {{secret: "{SECRET}", socket_id: "user:{{id}}"}}
topics:
  "seen:{{id}}":
    join: true
    handler: tests.test_channel:Seen
"""


class Seen(Channel):
    """Replies with what its socket says, before and after the join."""

    at_join: dict[str, Any]

    async def join(self, params: Any):
        socket = self.socket
        try:
            self.track("early", {})
        except PresenceError as exc:
            refused = exc.reason
        self.at_join = {"joined": socket.joined, "join_ref": socket.join_ref, "refused": refused}
        self.assigns["visits"] = self.assigns.get("visits", 0) + 1
        return ok()

    async def handle_in(self, event: str, payload: Any):
        socket = self.socket
        return ok({
            **self.at_join, "topic": self.topic, "captures": self.captures, "user": self.user["id"],
            "socket_id": socket.socket_id, "ref": self.socket_ref(), "now_joined": socket.joined,
            "visits": self.assigns["visits"], "presence_key": self.presence_key,
        })


def test_a_handler_reaches_the_server_only_through_its_socket():
    runtime = {name for name in vars(Channel) if not name.startswith("__")}
    # The shorthands and callbacks; no connection, server, pubsub or tracker.
    assert not {"connection", "server", "pubsub", "presence", "_connection", "_state"} & runtime
    assert {"push", "reply", "broadcast", "broadcast_from", "stop", "send_after", "track"} <= set(dir(ChannelSocket))


async def test_the_socket_carries_topic_join_ref_user_assigns_and_ref():
    async with ChannelHarness(load_config_text(CONFIG, "<test>")) as harness:
        socket = harness.connect(7)
        await socket.join("seen:a")
        _, channel = await socket.join("seen:b")
        ref = channel.push("what")
        seen = await channel.assert_reply(ref, "ok")
        assert seen == {
            "joined": False, "join_ref": channel.join_ref, "refused": "not joined",
            "topic": "seen:b", "captures": {"id": "b"}, "user": 7, "socket_id": "user:7", "ref": ref,
            "now_joined": True, "visits": 2, "presence_key": None,
        }
