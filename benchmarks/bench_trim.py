"""What ``server.memory_trim`` costs a churning server: connects, joins and closes with the trim at
its default (5 s), at 50 ms (a trim after nearly every burst of closes, the worst case), and off
(``null``, the baseline), in the same run.

Each run starts a fresh server per kind on bench.yaml with presence on the topics, and has
loadgen.mjs open ``--n`` sockets ``--concurrency`` at a time (connect + ``phx_join`` + reply),
hold them, then close them all, ``--rounds`` times over (bench_connect.py's
``connect_then_close``). The kinds take turns in a rotating order. Reported, medians of ``--runs``:
connects+joins per second and the server's CPU per socket (connect, join and close), each as a
ratio to the trim-off kind's (higher is better for both), the trims the server counted, the loop
time they took, and its RSS once the trim after the last closes has run (for trim off, a second
after they settled).

Then, for information, what one trim costs on the loop, in this process: a heap of 20, 100 and
400 MiB of 1-64 KiB buffers with seven in eight freed (as a burst of large frames leaves it), the
trim that gives them back, then a second trim with nothing left to give (the walk alone).

    python benchmarks/bench_trim.py                    # 2,000 sockets, 4 rounds, 5 runs
    python benchmarks/bench_trim.py --heap-only        # the trim's own cost, a few seconds
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: Server)
from bench_connect import connect_then_close  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from chanctl.server.memory import MemoryTrim, TrimStats, resident_bytes  # noqa: E402

KINDS = {"trim off": None, "trim 5s": 5.0, "trim 50ms": 0.05}
"""Each kind's ``server.memory_trim``, seconds (None: off)."""
BASELINE = "trim off"
TRIMS = "chanctl_memory_trims_total"


def until_trimmed(server: run.Server, delay: float | None) -> None:
    """Until the trim that the last closes scheduled has run: the count moves, at most ``delay``
    and a second later (it may have run before they settled); with the trim off, a second."""
    trims, deadline = run.metric(server.base, TRIMS), time.monotonic() + (delay or 0) + 1
    while (delay is None or run.metric(server.base, TRIMS) == trims) and time.monotonic() < deadline:
        time.sleep(0.1)


def measure(config: Path, delay: float | None, n: int, concurrency: int, rounds: int) -> dict:
    server = run.Server("chanctl", config)
    try:
        per_s, cpu = [], 0.0
        for _ in range(rounds):
            result = connect_then_close(server, n, concurrency)
            per_s.append(result["per_s"])
            cpu += result["server_cpu_s"] + result["close_cpu_s"]
        until_trimmed(server, delay)
        return {"per_s": statistics.median(per_s), "cpu_us_per_socket": cpu * 1e6 / (n * rounds),
                "trims": run.metric(server.base, TRIMS),
                "trim_ms": run.metric(server.base, "chanctl_memory_trim_seconds_total") * 1000, "rss_kib": server.rss_kib()}
    finally:
        server.stop()


def fragment_the_heap(mib: int) -> list[bytearray]:
    """Allocate ``mib`` MiB of 1-64 KiB buffers and free seven in eight, as a burst of large frames
    leaves the heap: glibc keeps the freed ones until a trim. Returns the kept ones."""
    chooser, kept, freed = random.Random(mib), [], []
    for i in range(mib * 1024 // 32):
        (kept if i % 8 == 0 else freed).append(bytearray(chooser.randint(1024, 64 * 1024)))
    return kept


def heap_trim_cost(mib: int) -> str:
    """One trim after :func:`fragment_the_heap`, then one more with nothing left to give."""
    kept = fragment_the_heap(mib)
    stats, times = TrimStats(), []
    before = resident_bytes() or 0
    for _ in range(2):
        started = time.perf_counter()
        MemoryTrim(0, stats).trim()
        times.append((time.perf_counter() - started) * 1000)
    del kept
    return (f"| {mib} | {before // 1024:,} | {stats.returned_bytes // 1024:,} | {times[0]:.2f} | "
            f"{times[0] / max(1, stats.returned_bytes / 2**20):.3f} | {times[1]:.2f} |")


def print_heap_trim_costs() -> None:
    print("one trim on a fragmented heap (1-64 KiB buffers, 7 in 8 freed), in this process")
    print("| heap MiB | RSS before, KiB | given back, KiB | trim ms | ms per MiB given back | second trim ms |")
    print("|---|---|---|---|---|---|")
    for mib in (20, 100, 400):
        print(heap_trim_cost(mib))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--heap-only", action="store_true", help="only the trim's own cost on a fragmented heap")
    args = parser.parse_args()
    if args.heap_only:
        print_heap_trim_costs()
        return
    kinds = list(KINDS)
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        text = (HERE / "bench.yaml").read_text().replace("    join: true\n", "    join: true\n    presence: true\n")
        configs = {}
        for kind, delay in KINDS.items():
            configs[kind] = Path(tmp) / f"{kind.replace(' ', '_')}.yaml"
            trim = "null" if delay is None else f"{delay}s"
            configs[kind].write_text(text.replace("server:\n", f"server:\n  memory_trim: {trim}\n", 1))
        for i in range(args.runs):
            for kind in kinds[i % len(kinds):] + kinds[: i % len(kinds)]:
                result = measure(configs[kind], KINDS[kind], args.n, args.concurrency, args.rounds)
                results[kind].append(result)
                print(f"# run {i + 1} {kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    median = {k: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for k, rs in results.items()}
    base = median[BASELINE]
    print(f"connect+join+close with presence, {args.n} sockets {args.concurrency} at a time, {args.rounds} rounds, "
          f"medians of {args.runs} runs")
    print("| server.memory_trim | connects+joins/s | vs off | server CPU µs/socket | vs off (off/this) | trims | their loop time, ms | RSS after, KiB |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        m = median[kind]
        print(f"| {kind.removeprefix('trim ')} | {m['per_s']:,.0f} | {m['per_s'] / base['per_s']:.2f}x | {m['cpu_us_per_socket']:.0f} | "
              f"{base['cpu_us_per_socket'] / m['cpu_us_per_socket']:.2f}x | {m['trims']:.0f} | {m['trim_ms']:.2f} | {m['rss_kib']:,.0f} |")
    print()
    print_heap_trim_costs()


if __name__ == "__main__":
    main()
