"""Fan-out throughput with an admin watcher attached, against the same server without one.

    python benchmarks/bench_admin.py [--subs 1000] [--messages 2000] [--runs 5]

Reuses benchmarks/run.py: the same ``chanctl serve benchmarks/bench.yaml`` pinned to core 0, the
same Node load generator (loadgen.mjs "fanout": one publisher, SUBS subscribers, 20 messages in
flight) on core 1, a fresh server per run. Runs alternate without and with a watcher; the watcher
is the product itself, ``chanctl listen chanctl:admin --json`` (snapshot, 1 Hz stats, the sampled
traffic tail, presence diffs), also on core 1 and started before the load. Reported: medians of
deliveries/s and of server CPU µs per delivery, and the ratios with / without (issue 6 asks for a
throughput ratio of at least 0.95).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run  # noqa: E402  (benchmarks/run.py: Server, loadgen, pinned)

from chanctl.tokens import TokenSigner  # noqa: E402


def start_watcher(server: run.Server) -> subprocess.Popen[str]:
    """``chanctl listen chanctl:admin`` as an operator runs it; returns once it has joined."""
    token = TokenSigner(run.SECRET).mint(1, {"admin": True})
    url = server.url.split("?", 1)[0]
    proc = subprocess.Popen(
        run.pinned(1, [sys.executable, "-m", "chanctl", "listen", "chanctl:admin", "--json", "--url", url, "--token", token]),
        cwd=run.ROOT, env={**os.environ, "PYTHONPATH": str(run.ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "listening on chanctl:admin" not in line:
        raise SystemExit(f"the watcher did not join: {line}{proc.stderr.read()}")
    return proc


def measure(watched: bool, opts: dict) -> dict:
    server = run.Server("chanctl")
    watcher = None
    try:
        if watched:
            watcher = start_watcher(server)
        result = run.loadgen(server, "fanout", **opts)
        if watcher is not None and watcher.poll() is not None:
            raise SystemExit("the watcher exited during the run")
        return result
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    opts = {"subs": args.subs, "messages": args.messages, "window": 20}
    run.compare_fanout(("without watcher", "with watcher"), lambda mode: measure(mode == "with watcher", opts), args.runs,
                       f"fan-out {args.subs} subscribers x {args.messages} messages")


if __name__ == "__main__":
    main()
