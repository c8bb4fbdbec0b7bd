"""How long a chat message stays in each server: from its frame parsed to each write that carries it.

The chat scenario's latencies are the generator's clock: they include the generator's own turns,
the kernel's loopback, and the machine's steal. This measures the servers' share alone. Each
server runs with two hooks (the same for both): websockets' ``Protocol.events_received`` notes when
a frame carrying ``"t": <sent at>`` is parsed (unmasked; chanctl may handle a frame before
websockets' ``process_event`` would see it), and asyncio's socket transport ``write``
matches every ``"t"`` in what it writes against those notes. Both servers write their broadcasts
and replies through that ``write``, so every delivery of every message is measured, the sender's
own copy included.

    python benchmarks/chat_residence.py --runs 3 --fifo
    python benchmarks/chat_residence.py --runs 3 --fifo --baseline /tmp/before   # also chanctl from another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
T_VALUE = re.compile(rb'"t": ?([0-9.]+)')
"""The send time loadgen.mjs puts in each chat message; plain_server.py writes it back with a space."""


def hooked() -> None:
    """In the server's process: install the hooks, run the server, write the residences (ns) at exit."""
    import atexit
    import runpy
    import signal
    import time
    from array import array
    from asyncio import selector_events

    import websockets.protocol as ws_protocol

    clock = time.perf_counter_ns
    parsed: dict[bytes, int] = {}
    residences = array("q")  # not tracked by the collector, unlike a list of ints would be growing
    events_received = ws_protocol.Protocol.events_received
    transport_write = selector_events._SelectorSocketTransport.write

    def noting(self):  # type: ignore[no-untyped-def]
        events = events_received(self)
        for event in events:
            data = getattr(event, "data", None)
            found = T_VALUE.search(data) if data else None
            if found:
                parsed[found.group(1)] = clock()
        return events

    def matching(self, data):  # type: ignore[no-untyped-def]
        if len(data) < 4096:
            now = clock()
            for found in T_VALUE.finditer(bytes(data)):
                at = parsed.get(found.group(1))
                if at is not None:
                    residences.append(now - at)
        return transport_write(self, data)

    ws_protocol.Protocol.events_received = noting
    selector_events._SelectorSocketTransport.write = matching

    def dump(*_: object) -> None:
        Path(os.environ["RESIDENCE_OUT"]).write_bytes(residences.tobytes())
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)  # the plain loop; chanctl serve handles SIGTERM and exits
    atexit.register(dump)
    target = sys.argv[1:]
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__")
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


def main() -> None:
    sys.path.insert(0, str(HERE))
    import run  # benchmarks/run.py: Server, loadgen, FIFO
    from array import array

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="the measured window of each run")
    parser.add_argument("--baseline", type=Path, help="another checkout's chanctl, measured as 'before'")
    parser.add_argument("--fifo", action="store_true", help="servers and generator under SCHED_FIFO, as run.py --fifo")
    args = parser.parse_args()
    if args.fifo:
        run.FIFO[:] = ["chrt", "-f", "10"]
    kinds = ("plain", "chanctl", "before") if args.baseline else ("plain", "chanctl")
    opts = {"rooms": 500, "rate": 2, "seconds": args.seconds, "warmup": 2}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.runs):
            for kind in kinds if n % 2 == 0 else kinds[::-1]:
                out = Path(tmp) / f"{kind}.{n}"
                root = args.baseline if kind == "before" else run.ROOT
                server = run.Server("chanctl" if kind == "before" else kind, root=root, wrap=Path(__file__),
                                    env={"RESIDENCE_OUT": str(out), "CHANCTL_RESIDENCE": "1"})
                try:
                    result = run.loadgen(server, "chat", **opts)
                finally:
                    server.stop()
                values = array("q")
                values.frombytes(out.read_bytes())
                ordered = sorted(values)
                last = len(ordered) - 1
                at = {q: ordered[int(q * last)] / 1000 for q in (0.1, 0.5, 0.9, 0.99)} if ordered else {}
                print(json.dumps({"run": n + 1, "kind": kind, "residences": len(ordered),
                                  **{f"server_p{int(q * 100)}_us": round(v) for q, v in at.items()},
                                  "client_p50_ms": round(result["p50_ms"], 3), "client_p99_ms": round(result["p99_ms"], 3),
                                  "window_steal_s": result.get("window_steal_s")}), flush=True)


if __name__ == "__main__":
    if os.environ.get("CHANCTL_RESIDENCE"):
        hooked()
    else:
        main()
