"""Fairness, load-proof: the longest event-loop callbacks (in CPU time) while one client floods.

A probe's round trip (benchmarks/bench_fairness.py) is as long as the loop turns it waits for;
on a shared machine the wall clock of those turns is mostly other processes. This runs the same
flood and probe against a server in this process, times every loop callback with the thread's
CPU clock (and the wall clock beside it), and reports the longest ones: what one client's frames
can hold every other client for, whatever the machine's load. GC collections during the flood
are counted too, and the loop's CPU per push (every callback's, the probe's few included).

    python benchmarks/fairness_callbacks.py                          # this checkout, 3 runs
    python benchmarks/fairness_callbacks.py --baseline /tmp/before   # and another, interleaved
    python benchmarks/fairness_callbacks.py --baseline /tmp/before --instructions   # CPU per push

``--instructions`` counts the server's instructions per push under callgrind instead (the flood
alone, no probe): the difference between floods of ``--pushes`` and 3x as many, so start-up
cancels out. About 10 minutes for two checkouts at the default 4,000 pushes.

Each checkout runs in its own process (``--one --root DIR``; its own ``chanctl`` on sys.path),
pinned to core 0, the flood and probe (Node) to core 1. Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: SECRET, pinned; it imports no chanctl)


def measure(pushes: int) -> dict[str, float]:
    """One flood against a server in this process (whichever ``chanctl`` sys.path finds first)."""
    import bench_fairness

    from chanctl.server.compile import compile_text
    from chanctl.server.runtime import build_server
    from chanctl.tokens import TokenSigner

    cpu: list[float] = []
    wall: list[float] = []
    collections: list[float] = []
    started = [0.0]
    handle_run = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        t, c = time.perf_counter(), time.thread_time()
        handle_run(handle)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            collections.append(time.thread_time() - started[0])

    async def flood() -> dict[str, float]:
        os.environ["CHANCTL_SECRET"] = run.SECRET
        async with build_server(compile_text(bench_fairness.CONFIG, "fairness.yaml"), port=0) as server:
            gc.collect()
            gc.freeze()  # as `chanctl serve` does once listening
            url = f"{server.url}?token={TokenSigner(run.SECRET).mint(1, {})}&vsn=2.0.0"
            loop = asyncio.get_running_loop()
            flooder = bench_fairness.node("flood", url, pushes=pushes)
            asyncio.events.Handle._run = timed  # type: ignore[method-assign]
            gc.callbacks.append(on_gc)
            try:
                rtts = await loop.run_in_executor(None, bench_fairness.probe_while, url, None, flooder)
            finally:
                asyncio.events.Handle._run = handle_run  # type: ignore[method-assign]
                gc.callbacks.remove(on_gc)
            assert flooder.stdout is not None
            rate = json.loads(flooder.stdout.read())["flood_rate"]
        ordered = sorted(cpu)
        return {
            "longest callback CPU ms": ordered[-1] * 1e3,
            "10th longest CPU ms": ordered[-10] * 1e3,
            "callbacks over 5 ms CPU": float(sum(c > 0.005 for c in cpu)),
            "longest callback wall ms": max(wall) * 1e3,
            "GC collections": float(len(collections)),
            "GC CPU ms": sum(collections) * 1e3,
            "loop CPU µs per push": sum(cpu) * 1e6 / pushes,
            "probe p99 ms": bench_fairness.percentile(rtts, 0.99),
            "flood pushes/s": float(rate),
        }

    return asyncio.run(flood())


def flood_only(pushes: int) -> None:
    """A flood and nothing else, against a server in this process: what ``--instructions`` counts."""
    import bench_fairness

    from chanctl.server.compile import compile_text
    from chanctl.server.runtime import build_server
    from chanctl.tokens import TokenSigner

    async def flood() -> None:
        os.environ["CHANCTL_SECRET"] = run.SECRET
        async with build_server(compile_text(bench_fairness.CONFIG, "fairness.yaml"), port=0) as server:
            gc.collect()
            gc.freeze()
            flooder = bench_fairness.node("flood", f"{server.url}?token={TokenSigner(run.SECRET).mint(1, {})}&vsn=2.0.0",
                                          pushes=pushes)
            assert flooder.stdin is not None
            flooder.stdin.write("go\n")
            flooder.stdin.flush()
            await asyncio.get_running_loop().run_in_executor(None, flooder.wait, 600)

    asyncio.run(flood())


def instructions(root: Path, pushes: int) -> float:
    """The server's instructions per push: floods of ``pushes`` and 3x as many under callgrind."""
    counts = []
    for size in (pushes, 3 * pushes):
        code = (f"import sys; sys.path[:0] = [{str(root)!r}, {str(HERE)!r}]; import fairness_callbacks; "
                f"fairness_callbacks.flood_only({size})")
        counts.append(run.callgrind(code)[0])
    return (counts[1] - counts[0]) / (2 * pushes)


def one(root: Path, pushes: int) -> dict[str, float]:
    code = (f"import sys, json; sys.path[:0] = [{str(root)!r}, {str(HERE)!r}]; import fairness_callbacks; "
            f"print(json.dumps(fairness_callbacks.measure({pushes})))")
    out = subprocess.run(run.pinned(0, [sys.executable, "-c", code]), check=True, capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, help="pushes per flood (50,000; with --instructions 4,000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout's chanctl, measured as 'before'")
    parser.add_argument("--instructions", action="store_true", help="instructions per push under callgrind")
    args = parser.parse_args()
    roots = {"before": args.baseline, "after": HERE.parent} if args.baseline else {"chanctl": HERE.parent}
    if args.instructions:
        pushes = args.pushes or 4000
        counts = {kind: instructions(root, pushes) for kind, root in roots.items()}
        print(f"server instructions per push (callgrind, {3 * pushes:,} minus {pushes:,} pushes): "
              + ", ".join(f"{kind} {count:,.0f}" for kind, count in counts.items()))
        if args.baseline:
            print(f"  after / before: {counts['after'] / counts['before']:.3f}")
        return
    pushes = args.pushes or 50_000
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in roots}
    for i in range(args.repeat):
        for kind in list(roots) if i % 2 == 0 else list(roots)[::-1]:
            result = one(roots[kind], pushes)
            runs[kind].append(result)
            print(f"# run {i + 1} {kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(f"loop callbacks during {pushes:,} pushes from one socket, median of {args.repeat} runs")
    print(f"  {'':<26} " + " ".join(f"{kind:>10}" for kind in runs))
    for key in next(iter(runs.values()))[0]:
        print(f"  {key:<26} " + " ".join(f"{statistics.median(r[key] for r in kind_runs):10.2f}" for kind_runs in runs.values()))


if __name__ == "__main__":
    main()
