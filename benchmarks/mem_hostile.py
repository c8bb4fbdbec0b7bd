"""Server memory under issue 16's attacks: joins with 1 MiB join payloads of ``[{}, {}, ...]``.

Starts ``chanctl serve`` (the checkout at ROOT, default this one) on a presence topic, then either
joins 8 times and closes each socket (``closed``: what a closed connection leaves pinned) or joins
10 times and keeps the sockets (``open``: what live channels keep). Prints the server's RSS before
and after, and the join replies' statuses (refused by ``server.max_join_payload`` by default; pass
``--extra ', max_join_payload: 2MiB'`` to let them in).

    python benchmarks/mem_hostile.py closed
    python benchmarks/mem_hostile.py open --extra ', max_join_payload: 2MiB'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
SECRET = "mem-secret-0123456789abcdef0123456789abcdef"
CONFIG = """
auth: {secret: "%s"}
server: {max_frame_size: 2MiB, outbound_buffer: 64MiB%s}
topics:
  "room:{id}":
    join: true
    presence: {batch: 50ms}
"""


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024)
    raise RuntimeError("no VmRSS")


async def attack(url: str, tokens: list[str], keep_open: bool) -> list[str]:
    payload = json.dumps({"pad": [{}] * 349_000})  # 1 MiB of JSON, about 24 MiB of Python objects
    statuses, sockets = [], []
    for token in tokens:
        ws = await websockets.connect(f"{url}?token={token}&vsn=2.0.0", max_size=None)
        await ws.send(f'["1","1","room:1","phx_join",{payload}]')
        while (frame := json.loads(await ws.recv()))[3] != "phx_reply":
            pass
        statuses.append(frame[4]["status"])
        if keep_open:
            sockets.append(ws)
        else:
            await ws.close()
    await asyncio.sleep(1.0)  # let the server finish the closes (this is a measurement, not a test)
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--root", type=Path, default=ROOT, help="the chanctl checkout to serve")
    parser.add_argument("--extra", default="", help="more server settings, e.g. ', max_join_payload: 2MiB'")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    from chanctl.tokens import TokenSigner

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hostile.yaml"
        config.write_text(CONFIG % (SECRET, args.extra))
        server = subprocess.Popen([sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0"],
                                  cwd=args.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stderr is not None
            while " at ws://" not in (line := server.stderr.readline()):
                if not line:
                    raise RuntimeError("chanctl serve exited before listening")
            url = line.split(" at ", 1)[1].split()[0]
            drain = subprocess.Popen(["cat"], stdin=server.stderr, stdout=subprocess.DEVNULL)
            start = rss_mib(server.pid)
            signer = TokenSigner(SECRET)
            n = 8 if args.mode == "closed" else 10
            statuses = asyncio.run(attack(url, [signer.mint(i) for i in range(n)], args.mode == "open"))
            print(json.dumps({"mode": args.mode, "joins": n, "statuses": sorted(set(statuses)),
                              "rss_start_mib": start, "rss_end_mib": rss_mib(server.pid)}))
        finally:
            server.terminate()
            server.wait(30)
            drain.wait(5) if "drain" in locals() else None


if __name__ == "__main__":
    main()
