"""What a ``realtime: true`` topic (Supabase's envelopes) costs against a plain topic, per client message.

    python benchmarks/bench_realtime.py [--subscribers 50] [--messages 200]

Both topics declare the same ``new_msg`` event (``do: broadcast``) in one config; a sender pushes
``new_msg`` on the plain topic and the same message as Supabase's ``broadcast`` envelope (with
``ack`` and ``self``, so both topics reply and deliver to the same sockets) on the realtime one.
The server runs in process through chanctl.testing (real server code, in-memory sockets), so the
figures are counts, not timings, and do not move with the machine's load: Python function calls
per message made by chanctl's own server code (cProfile, the testing harness's own parsing left out)
and bytes written per recipient (``stats.bytes_out``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
from pathlib import Path

import chanctl
from chanctl.config.load import load_config_text
from chanctl.testing import ChannelHarness

CONFIG = """
auth: {secret: "0123456789abcdef0123456789abcdef"}
server: {rate_limit: null}
topics:
  "room:{id}": {join: true, events: {new_msg: {schema: {body: {type: string}}, do: broadcast}}}
  "realtime:room:{id}": {realtime: true, join: true, events: {new_msg: {schema: {body: {type: string}}, do: broadcast}}}
"""
PACKAGE = str(Path(chanctl.__file__).parent)
HARNESS = str(Path(chanctl.__file__).parent / "testing")


def server_calls(profile: cProfile.Profile) -> int:
    """Calls of functions defined in chanctl, but not in the testing harness (the client side here)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sum(
        calls for (path, _, _), (_, calls, *_) in stats.items() if path.startswith(PACKAGE) and not path.startswith(HARNESS)
    )


async def measure(topic: str, event: str, payload: dict, join: dict, subscribers: int, messages: int) -> tuple[float, float]:
    harness = ChannelHarness(load_config_text(CONFIG, "<bench>"))
    expected = "broadcast" if topic.startswith("realtime:") else event
    channels = [(await harness.connect(i).join(topic, join))[1] for i in range(subscribers)]
    _, sender = await harness.connect(0).join(topic, join)
    await sender.assert_reply(sender.push(event, payload))  # warm up: imports, caches
    for channel in channels:
        await channel.assert_broadcast(expected)
    before = harness.server.stats.bytes_out
    profile = cProfile.Profile()
    profile.enable()
    refs = [sender.push(event, payload) for _ in range(messages)]
    await sender.assert_reply(refs[-1], timeout=120)
    profile.disable()
    written = harness.server.stats.bytes_out - before
    return server_calls(profile) / messages, written / messages / (subscribers + 1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    body = {"body": "hello"}
    plain = await measure("room:1", "new_msg", body, {}, args.subscribers, args.messages)
    envelope = {"type": "broadcast", "event": "new_msg", "payload": body}
    realtime = await measure("realtime:room:1", "broadcast", envelope, {"config": {"broadcast": {"ack": True, "self": True}}},
                             args.subscribers, args.messages)
    print(f"{args.subscribers} subscribers + the sender, {args.messages} messages")
    for name, (calls, size) in (("plain", plain), ("realtime", realtime)):
        print(f"  {name:9} {calls:8.1f} chanctl calls/message  {size:6.1f} bytes/recipient")
    print(f"  realtime - plain: {realtime[0] - plain[0]:+.1f} calls/message, {realtime[1] - plain[1]:+.1f} bytes/recipient")


if __name__ == "__main__":
    asyncio.run(main())
