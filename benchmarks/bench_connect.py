"""Connect + join: chanctl with and without presence against the plain loop, in the same run.

Each run starts a fresh server per kind (plain ``websockets`` loop, chanctl on bench.yaml, chanctl
with ``presence: true`` on the same topics) and has loadgen.mjs open ``--n`` sockets, ``--concurrency``
at a time, each connect + ``phx_join`` + reply (topics ``bench:c0`` .. ``bench:c99``, so a presence
topic has about n/100 members). The kinds take turns in a rotating order so that drift hits all
alike. Reported, medians of ``--runs``: connects+joins per second, and the server's CPU per
connect+join (from /proc; the figure a shared machine disturbs least), each as a ratio to the plain
loop's (higher is better for both: ``plain CPU / chanctl CPU``).

    python benchmarks/bench_connect.py                 # 2,000 sockets, 50 at a time, 5 runs
    python benchmarks/bench_connect.py --runs 7 --n 3000
    python benchmarks/bench_connect.py --baseline /tmp/before   # also chanctl from another checkout

``--baseline DIR`` adds that checkout's chanctl (``git archive`` of the commit before a change) as
two more kinds, ``before`` and ``before+presence``, in the same rotation: a before/after figure
that the machine's load affects alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: Server, loadgen)

KINDS = ("plain", "chanctl", "chanctl+presence")


def measure(kind: str, presence_config: Path, n: int, concurrency: int, baseline: Path | None) -> dict:
    root = baseline if kind.startswith("before") and baseline is not None else run.ROOT
    config = presence_config if kind.endswith("+presence") else None
    server = run.Server("plain" if kind == "plain" else "chanctl", config, root)
    try:
        result = run.loadgen(server, "connect", n=n, concurrency=concurrency)
    finally:
        server.stop()
    result["cpu_us_per_connect"] = result["server_cpu_s"] * 1e6 / n
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--baseline", type=Path, help="another checkout's chanctl, measured as 'before'")
    args = parser.parse_args()
    kinds = KINDS + (("before", "before+presence") if args.baseline else ())
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        presence_config = Path(tmp) / "bench_presence.yaml"
        text = (HERE / "bench.yaml").read_text()
        presence_config.write_text(text.replace("    join: true\n", "    join: true\n    presence: true\n"))
        for i in range(args.runs):
            order = kinds[i % len(kinds):] + kinds[: i % len(kinds)]
            for kind in order:
                result = measure(kind, presence_config, args.n, args.concurrency, args.baseline)
                results[kind].append(result)
                print(f"# run {i + 1} {kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    rate = {k: statistics.median(r["per_s"] for r in rs) for k, rs in results.items()}
    cpu = {k: statistics.median(r["cpu_us_per_connect"] for r in rs) for k, rs in results.items()}
    gen = {k: statistics.median(r["gen_cpu"] for r in rs) for k, rs in results.items()}
    print(f"connect+join, {args.n} sockets {args.concurrency} at a time, medians of {args.runs} runs")
    print("| server | connects+joins/s | vs plain | server CPU µs/connect | vs plain (plain/this) | generator CPU |")
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        print(f"| {kind} | {rate[kind]:,.0f} | {rate[kind] / rate['plain']:.2f}x | {cpu[kind]:.0f} | "
              f"{cpu['plain'] / cpu[kind]:.2f}x | {gen[kind]:.2f} |")


if __name__ == "__main__":
    main()
