"""Which load generator absorbs more deliveries per second of its own CPU: Node or ``chanctl bench``?

    python benchmarks/bench_generators.py [--subs 1000] [--messages 2000] [--runs 3] [--workers 1]

The fan-out of benchmarks/run.py (one publisher, SUBS subscribers on ``bench:fan``, 20 messages in
flight until every subscriber has them), against a fresh ``chanctl serve benchmarks/bench.yaml``
pinned to core 0 each run, driven alternately by loadgen.mjs (Node + ws) and by
``chanctl bench fanout`` (coordinator and workers), both pinned to core 1. Reported per generator,
medians: deliveries/s, the generator's CPU seconds per million deliveries (Node: its process; chanctl
bench: its workers plus the coordinator that publishes), its busiest share of a core, and the
server's CPU µs per delivery. A generator near a whole core was the limit of its run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run  # noqa: E402  (benchmarks/run.py: Server, loadgen, pinned)


def node(opts: dict) -> dict:
    server = run.Server("chanctl")
    try:
        result = run.loadgen(server, "fanout", **opts)
    finally:
        server.stop()
    cpu_s = result["gen_cpu"] * result["deliveries"] / result["per_s"]
    return {"per_s": result["per_s"], "gen_cpu_s": cpu_s, "gen_share": result["gen_cpu"], "deliveries": result["deliveries"],
            "server_us": result["server_cpu_s"] * 1e6 / result["deliveries"]}


def chanctl_bench(opts: dict, workers: int) -> dict:
    server = run.Server("chanctl")
    url, _, query = server.url.partition("?")
    token = dict(part.split("=", 1) for part in query.split("&"))["token"]
    argv = run.pinned(1, [sys.executable, "-m", "chanctl", "bench", "fanout", "--url", url, "--token", token,
                          "--topic", "bench:fan", "--event", "msg", "--clients", str(opts["subs"]),
                          "--messages", str(opts["messages"]), "--window", str(opts["window"]),
                          "--workers", str(workers), "--json", "--quiet", "--time-limit", "300s"])
    try:
        cpu0 = server.cpu_seconds()
        out = subprocess.run(argv, capture_output=True, text=True, cwd=run.ROOT, timeout=600)
        server_cpu = server.cpu_seconds() - cpu0
    finally:
        server.stop()
    if out.returncode != 0:
        raise SystemExit(f"chanctl bench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    report = json.loads(out.stdout)
    figures, generator = report["figures"], report["generator"]
    return {"per_s": figures["deliveries_per_s"], "gen_cpu_s": generator["cpu_s"], "gen_share": generator["busiest_cpu_share"],
            "deliveries": figures["deliveries"], "server_us": server_cpu * 1e6 / figures["deliveries"],
            "p99_ms": report["latency_ms"]["delivery"]["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    opts = {"subs": args.subs, "messages": args.messages, "window": 20}
    results: dict[str, list[dict]] = {"node": [], "chanctl bench": []}
    for i in range(args.runs):
        for kind in ("node", "chanctl bench") if i % 2 == 0 else ("chanctl bench", "node"):
            result = node(opts) if kind == "node" else chanctl_bench(opts, args.workers)
            results[kind].append(result)
            print(f"# run {i + 1} {kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(f"fan-out {args.subs} subscribers x {args.messages} messages, window 20, medians of {args.runs} runs")
    for kind, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in ("per_s", "gen_cpu_s", "gen_share", "server_us")}
        per_cpu = statistics.median(r["deliveries"] / r["gen_cpu_s"] for r in runs)
        print(f"  {kind:14} {med['per_s']:10,.0f} deliveries/s  {per_cpu:10,.0f} deliveries per generator CPU second"
              f"  generator share {med['gen_share']:.2f}  server {med['server_us']:.2f} µs CPU/delivery")


if __name__ == "__main__":
    main()
