"""Test your chanctl channels with pytest, in process, the way Phoenix.ChannelTest does.

The plugin registers itself (entry point ``pytest11``) and needs pytest-asyncio
(``pip install 'chanctl[testing]'``)::

    @pytest.mark.chanctl(config="chanctl.yaml")
    async def test_room(chanctl_channels):
        socket = chanctl_channels.connect(42)
        reply, room = await socket.join("room:42")
        ref = room.push("new_msg", {"body": "hi"})
        await room.assert_reply(ref, "ok")
        await room.assert_broadcast("new_msg", {"body": "hi"})

Everything runs on the real server code with an in-memory socket; see :mod:`chanctl.testing._harness`.
"""

from chanctl.errors import JoinRefused
from chanctl.testing._harness import (
    ASSERT_TIMEOUT,
    REFUTE_TIMEOUT,
    ChannelHarness,
    TestChannel,
    TestSocket,
    TestSubscription,
    matches,
)

__all__ = ["ASSERT_TIMEOUT", "REFUTE_TIMEOUT", "ChannelHarness", "JoinRefused", "TestChannel", "TestSocket", "TestSubscription",
           "matches"]
