"""Fan-out throughput with an admin watcher attached, against the same server without one.

    python benchmarks/bench_admin.py [--subscribers 500] [--messages 400] [--reps 5]

The server runs as its own process (`chanctl serve`, as users run it). One publisher pushes
MESSAGES events that a small handler broadcasts with a fixed payload to SUBSCRIBERS connections on
one topic, so every broadcast frame has the same size and a subscriber only has to count bytes
(a raw socket after the handshake: the load generator stays far cheaper than the server). A round
ends when every subscriber has read every frame. Rounds alternate "no watcher" and "watcher" (a
`chanctl.client` joined to chanctl:admin, draining its snapshot, stats and traffic), so both are
measured in the same run. Reported: medians of deliveries/s and of server CPU ns per delivery
(/proc/PID/schedstat), and the ratio watcher / no watcher (the issue asks for >= 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chanctl.client import Client  # noqa: E402
from chanctl.server.admin import ADMIN_TOPIC  # noqa: E402
from chanctl.tokens import TokenSigner  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
TOPIC = "fan:1"
PAYLOAD = {"body": "x" * 48}
HANDLER = '''
from chanctl import Channel, ok


class Fan(Channel):
    """Broadcast the pushed payload unchanged: every fan-out frame has the same bytes."""

    async def handle_in(self, event, payload):
        self.broadcast("tick", payload)
        return ok()
'''


def write_config(directory: Path, subscribers: int) -> Path:
    (directory / "fan_handler.py").write_text(HANDLER)
    config = directory / "bench.yaml"
    config.write_text(
        f"auth: {{secret: {SECRET}}}\n"
        "server: {outbound_buffer: 64MiB}\n"
        "topics:\n"
        '  "fan:{id}": {join: true, handler: "fan_handler:Fan"}\n'
    )
    return config


def start_server(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0", "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("chanctl serve exited")
        if " at ws://" in line:
            return proc, line.split(" at ", 1)[1].split()[0]


def cpu_seconds(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client must send it (RFC 6455 §5.3)."""
    data = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    if len(data) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(data))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
    return header + mask + masked


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return await reader.readexactly(length)


class Subscriber:
    """A raw WebSocket joined to TOPIC that counts bytes instead of parsing frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def join(cls, port: int, token: str) -> "Subscriber":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /socket/websocket?token={token}&vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake refused: {status[:80]!r}")
        writer.write(client_frame(json.dumps(["1", "1", TOPIC, "phx_join", {}])))
        reply = json.loads(await read_frame(reader))
        if reply[4]["status"] != "ok":
            raise SystemExit(f"join refused: {reply}")
        return cls(reader, writer)

    async def drain(self, size: int) -> None:
        await self.reader.readexactly(size)


def frame_size() -> int:
    body = len(json.dumps([None, None, TOPIC, "tick", PAYLOAD], separators=(",", ":")).encode())
    return body + (2 if body < 126 else 4)


async def fan_out(publisher, subscribers: list[Subscriber], messages: int, pid: int) -> tuple[float, float]:
    size = messages * frame_size()
    cpu, start = cpu_seconds(pid), time.perf_counter()
    replies = [publisher.push("shout", PAYLOAD, 60) for _ in range(messages)]
    await asyncio.gather(*(s.drain(size) for s in subscribers), *replies)
    elapsed, used = time.perf_counter() - start, cpu_seconds(pid) - cpu
    deliveries = messages * len(subscribers)
    return deliveries / elapsed, used / deliveries * 1e9


async def drain_events(channel) -> None:
    async for _ in channel.events():
        pass


async def main(subscribers: int, messages: int, reps: int) -> None:
    signer = TokenSigner(SECRET)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(write_config(Path(tmp), subscribers))
        port = int(url.split(":")[2].split("/")[0])
        try:
            subs = [await Subscriber.join(port, signer.mint(1000 + i)) for i in range(subscribers)]
            async with Client(url, token=signer.mint(1)) as pub, Client(url, token=signer.mint(2, {"admin": True})) as admin:
                publisher = pub.channel(TOPIC)
                await publisher.join(10)
                publisher_events = asyncio.create_task(drain_events(publisher))
                await fan_out(publisher, subs, messages, proc.pid)  # warm up
                results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
                for rep in range(reps):
                    for mode in ("without", "with") if rep % 2 == 0 else ("with", "without"):
                        watcher = drainer = None
                        if mode == "with":
                            watcher = admin.channel(ADMIN_TOPIC)
                            await watcher.join(10)
                            drainer = asyncio.create_task(drain_events(watcher))
                        results[mode].append(await fan_out(publisher, subs, messages, proc.pid))
                        if watcher is not None and drainer is not None:
                            await watcher.leave(10)
                            drainer.cancel()
                publisher_events.cancel()
        finally:
            proc.terminate()
            proc.wait()
    rate = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    print(f"{subscribers} subscribers x {messages} broadcasts, {reps} reps each, medians")
    for mode in ("without", "with"):
        print(f"  {mode + ' watcher':16} {rate[mode]:10.0f} deliveries/s  {cpu[mode]:7.0f} ns server CPU/delivery")
    print(f"  ratio with/without: throughput {rate['with'] / rate['without']:.3f}, "
          f"CPU per delivery {cpu['with'] / cpu['without']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.messages, args.reps))
