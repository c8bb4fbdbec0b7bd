"""Connect + join: chanctl with and without presence against the plain loop, in the same run.

Each run starts a fresh server per kind (plain ``websockets`` loop, chanctl on bench.yaml, chanctl
with ``presence: true`` on the same topics) and has loadgen.mjs open ``--n`` sockets, ``--concurrency``
at a time, each connect + ``phx_join`` + reply (topics ``bench:c0`` .. ``bench:c99``, so a presence
topic has about n/100 members). The kinds take turns in a rotating order so that drift hits all
alike. Reported, medians of ``--runs``: connects+joins per second, and the server's CPU per
connect+join (from /proc, read when the last socket has joined; the figure a shared machine
disturbs least), each as a ratio to the plain loop's (higher is better for both: ``plain CPU /
chanctl CPU``); then the server's CPU per socket for closing them all (the generator drops them),
for information.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: Server, loadgen)

KINDS = ("plain", "chanctl", "chanctl+presence")


def connect_then_close(server: run.Server, n: int, concurrency: int) -> dict:
    """loadgen.mjs's connect mode, holding every socket once joined: the server's CPU up to the
    last join (the connects and joins alone), then its CPU for the close of them all, once it
    settles. Read at the end of the run instead, the first figure took an unknown share of the
    closes (the generator ends them as it exits), which differ between servers (the plain loop
    formats a traceback per dropped socket)."""
    argv = run.pinned(1, ["node", str(run.ROOT / "benchmarks" / "loadgen.mjs"),
                          json.dumps({"mode": "connect", "url": server.url, "n": n, "concurrency": concurrency, "hold": True})])
    cpu0 = server.cpu_seconds()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"loadgen connect against {server.kind} failed (exit {proc.wait()})")
    joined = server.cpu_seconds()
    out, _ = proc.communicate("close\n", timeout=600)
    result = json.loads(out.splitlines()[-1])
    settled, last = joined, -1.0
    while settled != last:  # the server's CPU stops moving once the closes are handled
        last = settled
        time.sleep(0.3)
        settled = server.cpu_seconds()
    result["server_cpu_s"] = joined - cpu0
    result["close_cpu_s"] = settled - joined
    return result


def measure(kind: str, presence_config: Path, n: int, concurrency: int, baseline: Path | None) -> dict:
    root = baseline if kind.startswith("before") and baseline is not None else run.ROOT
    config = presence_config if kind.endswith("+presence") else None
    server = run.Server("plain" if kind == "plain" else "chanctl", config, root)
    try:
        result = connect_then_close(server, n, concurrency)
    finally:
        server.stop()
    result["cpu_us_per_connect"] = result["server_cpu_s"] * 1e6 / n
    result["close_us"] = result["close_cpu_s"] * 1e6 / n
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
    close = {k: statistics.median(r["close_us"] for r in rs) for k, rs in results.items()}
    print(f"connect+join, {args.n} sockets {args.concurrency} at a time, medians of {args.runs} runs")
    print("| server | connects+joins/s | vs plain | server CPU µs/connect | vs plain (plain/this) | generator CPU | close µs |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        print(f"| {kind} | {rate[kind]:,.0f} | {rate[kind] / rate['plain']:.2f}x | {cpu[kind]:.0f} | "
              f"{cpu['plain'] / cpu[kind]:.2f}x | {gen[kind]:.2f} | {close[kind]:.0f} |")
    print("per run, server CPU µs/connect: " + "; ".join(
        f"{k} " + "/".join(f"{r['cpu_us_per_connect']:.0f}" for r in rs) for k, rs in results.items()))


if __name__ == "__main__":
    main()
