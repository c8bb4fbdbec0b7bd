"""What chanctl.client costs its own process: a connect + join, and a push round trip.

    python benchmarks/bench_client.py [--n 2000] [--reps 5]

`chanctl bench` and the tests drive load through chanctl.client, so its CPU per operation bounds
how much load one core can generate. The server runs as its own process (`join: true` on
`bench:{id}`, a `reply` event); this process measures its own CPU time (process_time) per
operation, medians over repetitions, against a baseline in the same run: the same frames sent and
read over a bare `websockets` connection, which is the floor any client on that library pays.

- connect + join: open a socket, join one topic, close; N times in sequence.
- push round trip: N pushes in flight on one joined channel, awaiting all replies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chanctl.client import Client, endpoint_url  # noqa: E402
from chanctl.tokens import TokenSigner  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
CONFIG = f"""auth: {{secret: {SECRET}}}
server: {{rate_limit: null}}
topics:
  "bench:{{id}}":
    join: true
    events:
      echo: {{do: reply}}
"""


def start_server(directory: Path) -> tuple[subprocess.Popen[str], str]:
    config = directory / "bench.yaml"
    config.write_text(CONFIG)
    proc = subprocess.Popen([sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    said = []
    while True:
        line = proc.stderr.readline()
        said.append(line)
        if not line:
            raise SystemExit("chanctl serve exited:\n" + "".join(said))
        if " at ws://" in line:
            # Keep reading its log, or the server blocks on a full pipe (one line per connection).
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, line.split(" at ", 1)[1].split()[0]


async def client_connects(url: str, token: str, n: int) -> None:
    for i in range(n):
        async with Client(url, token=token, reconnect=False) as client:
            await client.channel(f"bench:{i}").join(10.0)


async def raw_connects(url: str, token: str, n: int) -> None:
    for i in range(n):
        async with websockets.connect(f"{endpoint_url(url)}?token={token}&vsn=2.0.0", compression=None, ping_interval=None) as ws:
            await ws.send(json.dumps(["1", "1", f"bench:{i}", "phx_join", {}]))
            await ws.recv()


async def client_pushes(url: str, token: str, n: int) -> None:
    async with Client(url, token=token, reconnect=False) as client:
        channel = client.channel("bench:push")
        await channel.join(10.0)
        await asyncio.gather(*(channel.push("echo", {"n": i}, 30.0) for i in range(n)))


async def raw_pushes(url: str, token: str, n: int) -> None:
    async with websockets.connect(f"{endpoint_url(url)}?token={token}&vsn=2.0.0", compression=None, ping_interval=None) as ws:
        await ws.send(json.dumps(["1", "1", "bench:push", "phx_join", {}]))
        await ws.recv()
        for i in range(n):
            await ws.send(json.dumps(["1", str(i + 2), "bench:push", "echo", {"n": i}]))
        replies = {}
        while len(replies) < n:
            frame = json.loads(await ws.recv())
            replies[frame[1]] = frame[4]


async def cpu_per(operation, url: str, token: str, n: int) -> float:
    start = time.process_time()
    await operation(url, token, n)
    return (time.process_time() - start) / n * 1e6


async def main(n: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            token = TokenSigner(SECRET).mint(1)
            cases = {
                "connect + join": (client_connects, raw_connects, max(n // 10, 50)),
                "push round trip": (client_pushes, raw_pushes, n),
            }
            results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
            for name, (ours, raw, count) in cases.items():  # warm up
                await ours(url, token, min(count, 50))
                await raw(url, token, min(count, 50))
            for rep in range(reps):
                for name, (ours, raw, count) in cases.items():
                    pair = [(ours, 0), (raw, 1)] if rep % 2 else [(raw, 1), (ours, 0)]  # neither always first
                    for operation, slot in pair:
                        results[name][slot].append(await cpu_per(operation, url, token, count))
        finally:
            proc.terminate()
            proc.wait()
    print(f"client CPU per operation, medians of {reps}")
    for name, (ours, raw) in results.items():
        a, b = statistics.median(ours), statistics.median(raw)
        print(f"  {name:16} chanctl.client {a:7.1f} µs   bare websockets {b:7.1f} µs   ratio {a / b:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.reps))
