"""Benchmarks: chanctl against a plain ``websockets`` broadcast loop, measured in the same run.

    python benchmarks/run.py            # about six minutes on 2 cores
    python benchmarks/run.py --full     # the issue's sizes (2,000 messages at 5,000 subscribers too)
    python benchmarks/run.py --only fan-out --baseline /tmp/before   # also chanctl from another checkout

Each server runs pinned to core 0 (``taskset -c 0``), the Node load generator (loadgen.mjs, the
``ws`` package from tests/js/node_modules) on core 1. Runs are interleaved (plain, chanctl,
chanctl, plain, ...) and each figure is the median of ``--runs`` runs; every server starts fresh
for every scenario. The generator reports its own CPU: a share near 1.0 means it saturated its
core and the server figure is a lower bound. ``--baseline DIR`` adds that checkout's chanctl (a
``git archive`` of the commit before a change) to the rotation as "before", and a second table of
chanctl against it. ``--fifo`` runs servers and generator under SCHED_FIFO, so that other work on
a shared machine does not decide the latencies (the chat scenario's p99; benchmarks/README.md,
"Latency at low load"). ``--control`` runs the plain loop twice in each run, so that the chat
scenario's per-run lines also show the plain loop against itself: the noise floor of a per-run p99
ratio on the machine at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
from collections.abc import Callable
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
SECRET = secrets.token_hex(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIFO: list[str] = []
"""``chrt -f 10`` when ``--fifo`` is given: the servers and the generator run under SCHED_FIFO."""


def pinned(core: int, argv: list[str]) -> list[str]:
    argv = ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv
    return [*FIFO, *argv]


def callgrind(code: str) -> tuple[int, str]:
    """``python -c code`` under valgrind's callgrind: the instructions it executed (its start-up
    included: callers subtract two runs of different sizes) and what it printed.

    Raises:
        subprocess.CalledProcessError: the run failed.
    """
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code],
                         capture_output=True, text=True, cwd="/", check=True)
    return int(next(line for line in out.stderr.splitlines() if "Collected :" in line).split()[-1]), out.stdout


def checkout_args(parser: argparse.ArgumentParser, n_help: str) -> None:
    """The options of a benchmark that measures two checkouts, each in a process of its own."""
    parser.add_argument("--before", type=Path, help="the checkout to compare against (e.g. a git archive of main)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout measured (default: this one)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--n", type=int, default=20000, help=n_help)
    parser.add_argument("--one", action="store_true", help="measure --root once and print JSON")
    parser.add_argument("--instructions", action="store_true", help="instructions per message under callgrind instead of time")


def metric(base: str, name: str) -> float:
    """The sum of the samples of family ``name`` in a chanctl server's /metrics (0 when absent);
    ``base`` is its ``host:port``."""
    with urllib.request.urlopen(f"http://{base}/metrics", timeout=30) as answer:  # noqa: S310 (loopback)
        lines = answer.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name) and line[len(name)] in " {")


def rss_kib(pid: int) -> int:
    """A process's resident memory now (VmRSS), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU so far, from /proc (the figure a shared machine disturbs least)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float:
    """CPU time the hypervisor took from this (virtual) machine so far, over all its CPUs, from
    /proc/stat: a stall no scheduling class can prevent, so a latency run with much of it is noise."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


class Server:
    """One server process on core 0; ``url`` is what the generator connects to."""

    def __init__(self, kind: str, config: Path | None = None, root: Path = ROOT, wrap: Path | None = None,
                 env: dict[str, str] | None = None):
        """``config``: the chanctl config to serve (default benchmarks/bench.yaml); ``root``: the
        checkout whose chanctl serves (another one: a before/after comparison in one run);
        ``wrap``: a script the server's Python runs instead, with the server's own arguments
        (chat_residence.py's hooks); ``env``: more environment for the server."""
        self.kind = kind
        port = free_port()
        self.base = f"127.0.0.1:{port}"
        """``host:port``, for HTTP (/metrics, /healthz)."""
        env = {**os.environ, **(env or {}), "CHANCTL_SECRET": SECRET, "PYTHONPATH": str(root)}
        if kind == "plain":
            argv = [sys.executable, str(ROOT / "benchmarks" / "plain_server.py"), str(port)]
            self.url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
        else:
            argv = [sys.executable, "-m", "chanctl", "serve", str(config or ROOT / "benchmarks" / "bench.yaml"),
                    "--port", str(port), "--log-level", "warning"]
            sys.path.insert(0, str(ROOT))
            from chanctl.tokens import TokenSigner

            token = TokenSigner(SECRET).mint(1, {})
            self.url = f"ws://127.0.0.1:{port}/socket/websocket?token={token}&vsn=2.0.0"
        if wrap is not None:
            argv = [sys.executable, str(wrap), *argv[1:]]
        self.proc = subprocess.Popen(pinned(0, argv), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:  # the port accepting is the readiness signal for both servers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{kind} server did not start")
                time.sleep(0.05)

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen(server: Server, mode: str, **opts: object) -> dict:
    """Run one loadgen.mjs scenario against ``server``; its JSON result, plus the server's CPU
    seconds over the whole run (``server_cpu_s``) and, for a scenario that marks its measured
    window (chat), over that window alone (``window_cpu_s``), with the machine's steal time in it
    (``window_steal_s``)."""
    # Under SCHED_FIFO, V8's helper threads share the generator's core at its priority, and its
    # main thread spun waiting for them (0.95 of the core instead of 0.2, p99 3-10x): one thread.
    node = ["node", "--single-threaded"] if FIFO else ["node"]
    argv = pinned(1, [*node, str(ROOT / "benchmarks" / "loadgen.mjs"), json.dumps({"mode": mode, "url": server.url, **opts})])
    cpu0 = server.cpu_seconds()
    marks: dict[str, float] = {}
    steal: dict[str, float] = {}
    lines: list[str] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if line.startswith('{"mark"'):
                marks[json.loads(line)["mark"]] = server.cpu_seconds()
                steal[json.loads(line)["mark"]] = steal_seconds()
            else:
                lines.append(line)
        err = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
    if proc.returncode != 0:
        raise SystemExit(f"loadgen {mode} against {server.kind} failed:\n{''.join(lines)}\n{err}")
    result = json.loads(lines[-1])
    result["server_cpu_s"] = server.cpu_seconds() - cpu0
    if "measure" in marks and "end" in marks:
        result["window_cpu_s"] = marks["end"] - marks["measure"]
        result["window_steal_s"] = steal["end"] - steal["measure"]
    return result


def compare_fanout(modes: tuple[str, str], measure_one: Callable[[str], dict], runs: int, title: str) -> None:
    """Run a fan-out under two modes, interleaved (A B, B A, ...) so drift hits both alike, and
    print each mode's median deliveries/s, server CPU per delivery and generator CPU, then the
    second mode's ratio to the first (the same-run baseline)."""
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    for i in range(runs):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            result = measure_one(mode)
            results[mode].append(result)
            print(f"# run {i + 1} {mode}: {result}", file=sys.stderr, flush=True)
    rate = {m: statistics.median(r["per_s"] for r in rs) for m, rs in results.items()}
    cpu = {m: statistics.median(r["server_cpu_s"] * 1e6 / r["deliveries"] for r in rs) for m, rs in results.items()}
    gen = {m: statistics.median(r["gen_cpu"] for r in rs) for m, rs in results.items()}
    print(f"{title}, medians of {runs} runs")
    for mode in modes:
        print(f"  {mode:16} {rate[mode]:10,.0f} deliveries/s  {cpu[mode]:5.2f} µs server CPU/delivery  "
              f"generator CPU {gen[mode]:.2f}")
    base, other = modes
    print(f"  ratio {other} / {base}: throughput {rate[other] / rate[base]:.3f}, "
          f"CPU per delivery {cpu[other] / cpu[base]:.3f}")


def idle_rss(server: Server, n: int) -> dict:
    argv = pinned(1, ["node", str(ROOT / "benchmarks" / "loadgen.mjs"), json.dumps({"mode": "idle", "url": server.url, "n": n})])
    before = server.rss_kib()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    ready = json.loads(proc.stdout.readline())
    time.sleep(1.0)  # let the server finish the last joins' bookkeeping before sampling RSS
    after = server.rss_kib()
    proc.stdin.write("close\n")
    proc.stdin.flush()
    proc.wait(60)
    return {"kib_per_conn": (after - before) / ready["ready"]}


def scenarios(full: bool, chat_seconds: int | None = None) -> list[tuple[str, str, dict]]:
    seconds = chat_seconds or (10 if full else 5)
    return [
        ("fan-out 1,000 subs", "fanout", {"subs": 1000, "messages": 2000, "window": 20}),
        ("fan-out 5,000 subs", "fanout", {"subs": 5000, "messages": 2000 if full else 200, "window": 20}),
        ("chat 500 rooms x 2", "chat", {"rooms": 500, "rate": 2, "seconds": seconds, "warmup": 2}),
        ("connect+join", "connect", {"n": 2000, "concurrency": 50}),
        ("idle RSS 5,000", "idle", {"n": 5000}),
        ("idle RSS 10,000", "idle", {"n": 10000}),
    ]


CONTROL = "plain again"
"""``--control``'s kind: a second plain loop, so that the chat pairs show the plain loop against itself."""


def measure(kind: str, mode: str, opts: dict, baseline: Path | None = None) -> dict:
    server = Server("chanctl", root=baseline) if kind == "before" and baseline else Server("plain" if kind == CONTROL else kind)
    try:
        if mode == "idle":
            return idle_rss(server, opts["n"])
        return loadgen(server, mode, **opts)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="the issue's sizes everywhere (slower)")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--chat-seconds", type=int,
                        help="the chat scenario's measured window (default 5, 10 with --full); a longer one weighs one "
                             "hiccup of the machine (steal, a collection) less in each run's p99")
    parser.add_argument("--baseline", type=Path, help="another checkout's chanctl, measured as 'before'")
    parser.add_argument("--fifo", action="store_true",
                        help="run the servers and the generator under SCHED_FIFO (chrt -f 10; root or CAP_SYS_NICE): "
                             "the rest of a shared machine cannot delay them, so latencies are the servers' own")
    parser.add_argument("--control", action="store_true",
                        help="also run the plain loop a second time in each run (chat): how often the plain loop's p99 is "
                             "within 1.2x of its own, the measurement's noise floor on this machine")
    args = parser.parse_args()
    if args.fifo:
        FIFO[:] = ["chrt", "-f", "10"]
    kinds = ("plain", "chanctl", "before") if args.baseline else ("plain", "chanctl")
    if args.control:
        kinds += (CONTROL,)
    if shutil.which("node") is None or not (NODE_MODULES / "ws").is_dir():
        raise SystemExit("needs Node and tests/js/node_modules: run `npm ci --prefix tests/js`")
    results: dict[str, dict[str, list[dict]]] = {}
    for name, mode, opts in scenarios(args.full, args.chat_seconds):
        if args.only and args.only not in name:
            continue
        results[name] = {kind: [] for kind in kinds}
        for run in range(args.runs):
            order = kinds if run % 2 == 0 else kinds[::-1]
            for kind in order:
                result = measure(kind, mode, opts, args.baseline)
                results[name][kind].append(result)
                print(f"# {name} run {run + 1} {kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(table(results))
    for name, mode, opts in scenarios(args.full, args.chat_seconds):
        if mode == "chat" and name in results:
            print()
            print(pairs(results[name], kinds, opts["seconds"]))
    if args.baseline:
        print()
        print(table(results, ("before", "chanctl")))


def med(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def pairs(by_kind: dict[str, list[dict]], kinds: tuple[str, ...], seconds: float, within: float = 1.2,
          max_steal: float = 0.02) -> str:
    """The chat target is per run ("reliably across runs"), so each run's p99 ratio to the plain
    loop's in the same run, with both windows' steal time, and in how many runs chanctl was within
    ``within``: of all, and of the clean ones (steal under ``max_steal`` of both CPUs' time in each
    window; on this KVM guest a window with more had p99s of 4-140 ms on every server)."""
    lines, met, clean, met_clean = [], 0, 0, 0
    limit = max_steal * 2 * seconds
    for run, plain in enumerate(by_kind["plain"]):
        other = by_kind["chanctl"][run]
        ratio = other["p99_ms"] / plain["p99_ms"]
        steals = [r.get("window_steal_s", 0.0) for r in (plain, other)]
        is_clean = max(steals) < limit
        met += ratio <= within
        clean += is_clean
        met_clean += is_clean and ratio <= within
        cells = [f"{kind} {by_kind[kind][run]['p99_ms']:.2f} ms (steal {by_kind[kind][run].get('window_steal_s', 0.0):.2f} s)" for kind in kinds]
        lines.append(f"run {run + 1}: p99 " + ", ".join(cells) + f": chanctl/plain {ratio:.2f}x" + ("" if is_clean else " (steal over limit)"))
    lines.append(f"chanctl's p99 within {within}x of the plain loop's in {met} of {len(by_kind['plain'])} runs; "
                 f"{met_clean} of the {clean} runs with steal under {limit:.2f} s per window")
    if CONTROL in by_kind:
        ratios = [again["p99_ms"] / plain["p99_ms"] for plain, again in zip(by_kind["plain"], by_kind[CONTROL])]
        lines.append(f"the plain loop against itself ({CONTROL} / plain): " + ", ".join(f"{r:.2f}x" for r in ratios)
                     + f"; within {within}x in {sum(r <= within for r in ratios)} of {len(ratios)} runs")
    return "\n".join(lines)


def table(results: dict[str, dict[str, list[dict]]], kinds: tuple[str, str] = ("plain", "chanctl")) -> str:
    """One row per scenario and metric: the two ``kinds`` side by side, the second's ratio to the first."""
    base, other = kinds
    title = {"plain": "plain websockets", "before": "chanctl before", "chanctl": "chanctl"}
    rows = [f"| scenario | metric | {title[base]} | {title[other]} | {other} / {base} | generator CPU ({base} / {other}) |",
            "|---|---|---|---|---|---|"]
    metrics = {
        "fanout": [("deliveries/s", "per_s", "{:,.0f}"), ("p50 latency ms", "p50_ms", "{:.1f}"), ("p99 latency ms", "p99_ms", "{:.1f}"),
                   ("server CPU µs/delivery", None, "{:.2f}")],
        "chat": [("p50 latency ms", "p50_ms", "{:.2f}"), ("p99 latency ms", "p99_ms", "{:.2f}"),
                 ("server CPU µs/message", None, "{:.1f}"), ("steal s in the window (both CPUs)", "window_steal_s", "{:.2f}"),
                 ("delivered/expected", None, "{}")],
        "connect": [("connections+joins/s", "per_s", "{:,.0f}")],
        "idle": [("KiB RSS per joined connection", "kib_per_conn", "{:.1f}")],
    }
    for name, by_kind in results.items():
        mode = "fanout" if "fan-out" in name else "chat" if "chat" in name else "connect" if "connect" in name else "idle"
        cpu = " / ".join(f"{med(by_kind[k], 'gen_cpu'):.2f}" if med(by_kind[k], "gen_cpu") is not None else "-" for k in kinds)
        for label, key, fmt in metrics[mode]:
            if label == "server CPU µs/delivery":
                values = [statistics.median(r["server_cpu_s"] * 1e6 / r["deliveries"] for r in by_kind[k]) for k in kinds]
            elif label == "server CPU µs/message":  # the measured window's CPU per message sent (2 deliveries + a reply)
                values = [statistics.median(r["window_cpu_s"] * 1e6 / r["sent"] for r in by_kind[k]) for k in kinds]
            elif label == "delivered/expected":
                cells = [f"{sum(r['delivered'] for r in by_kind[k])}/{sum(r['expected'] for r in by_kind[k])}" for k in kinds]
                rows.append(f"| {name} | {label} | {cells[0]} | {cells[1]} | | {cpu} |")
                continue
            else:
                values = [med(by_kind[k], key) for k in kinds]
            ratio = f"{values[1] / values[0]:.2f}x" if values[0] and values[1] is not None else "-"
            rows.append(f"| {name} | {label} | {fmt.format(values[0])} | {fmt.format(values[1])} | {ratio} | {cpu} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
