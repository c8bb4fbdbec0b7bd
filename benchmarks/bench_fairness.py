"""Fairness: does one client pushing as fast as it can make everyone else wait?

A probe socket sends a heartbeat every 5 ms and times each reply while a second socket writes
``--pushes`` pushes at once (rate limit off, as many deployments run); the baseline is the same
probe against the same server with no flood, measured in the same run. Reported per run: the
probe's p50/p99/max round trip with and without the flood, their ratio, and the flood's achieved
rate. Medians over ``--repeat`` runs. The server runs as ``chanctl serve`` pinned to core 0, the
flood and the probe (benchmarks/fairness_load.mjs, two Node processes) on core 1.

    python benchmarks/bench_fairness.py                    # 50,000 pushes, 3 runs
    python benchmarks/bench_fairness.py --pushes 100000 --repeat 5
    python benchmarks/bench_fairness.py --baseline /tmp/before   # also chanctl from another checkout

``--baseline DIR`` measures that checkout's chanctl (a ``git archive`` of the commit before a
change) as "before", its runs alternating with this checkout's (before, after, after, before, ...),
so that a shared machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: Server, pinned)

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {rate_limit: null, outbound_buffer: 256MiB, max_frame_size: 64KiB}
topics:
  "bench:{id}":
    join: true
    events:
      msg: {do: broadcast}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def node(role: str, url: str, **opts: object) -> subprocess.Popen[str]:
    argv = ["node", str(HERE / "fairness_load.mjs"), json.dumps({"role": role, "url": url, **opts})]
    return subprocess.Popen(run.pinned(1, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def probe_while(url: str, seconds: float | None, flood: subprocess.Popen[str] | None = None) -> list[float]:
    """The probe's round trips while ``flood`` runs (or for ``seconds``)."""
    probe = node("probe", url)
    assert probe.stdout is not None and probe.stdin is not None
    assert json.loads(probe.stdout.readline()) == {"ready": True}
    if flood is not None:
        flood.stdin.write("go\n")  # type: ignore[union-attr]
        flood.stdin.flush()  # type: ignore[union-attr]
        flood.wait(timeout=300)
    else:
        time.sleep(seconds or 2)
    probe.stdin.write("stop\n")
    probe.stdin.flush()
    rtts = json.loads(probe.stdout.readline())["rtts"]
    probe.wait()
    return rtts


def one_run(config: Path, pushes: int, root: Path = run.ROOT) -> dict[str, float]:
    server = run.Server("chanctl", config, root)
    try:
        base = probe_while(server.url, 2)
        flood = node("flood", server.url, pushes=pushes)
        rtts = probe_while(server.url, None, flood)
        assert flood.stdout is not None
        rate = json.loads(flood.stdout.read())["flood_rate"]
    finally:
        server.stop()
    return {
        "flood p50 ms": percentile(rtts, 0.5), "flood p99 ms": percentile(rtts, 0.99), "flood max ms": max(rtts),
        "quiet p50 ms": percentile(base, 0.5), "quiet p99 ms": percentile(base, 0.99),
        "p99 flood / quiet": percentile(rtts, 0.99) / percentile(base, 0.99),
        "flood pushes/s": float(rate),
        "probe beats": float(len(rtts)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout's chanctl, measured as 'before'")
    args = parser.parse_args()
    roots = {"before": args.baseline, "after": run.ROOT} if args.baseline else {"chanctl": run.ROOT}
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in roots}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "fairness.yaml"
        config.write_text(CONFIG)
        for i in range(args.repeat):
            for kind in list(roots) if i % 2 == 0 else list(roots)[::-1]:
                result = one_run(config, args.pushes, roots[kind])
                runs[kind].append(result)
                print(f"# run {i + 1} {kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(f"fairness: {args.pushes:,} pushes from one socket, heartbeat probe every 5 ms, median of {args.repeat} runs")
    print(f"  {'':<20} " + " ".join(f"{kind:>10}" for kind in runs))
    for key in runs["after" if args.baseline else "chanctl"][0]:
        print(f"  {key:<20} " + " ".join(f"{statistics.median(r[key] for r in kind_runs):10.2f}" for kind_runs in runs.values()))


if __name__ == "__main__":
    main()
