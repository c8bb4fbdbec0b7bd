"""Joins per second with a CEL join rule against `join: true`, on a real `chanctl serve`.

    python benchmarks/bench_rules.py [--joins 2000] [--reps 5]

The server runs as its own process (as users run it); one client pipelines N joins, waits for the
N replies, then N leaves. Both topic patterns live in the same server and alternate within each
repetition, so the baseline (`join: true`) is measured in the same run. The rule is the chat sample's
room rule, over a data_file of N rooms. Reported: medians of joins/s and of server CPU µs per join
(from /proc/PID/schedstat), and their ratios. The issue asks for a throughput ratio of at least 0.9.

A rule the library evaluates remembers its decisions (chanctl/rules/rule.py, Rule), so two CEL
figures are given: "warm", the same user joining rooms it joined before (a reconnect), and "cold",
a new user each repetition, so every decision is a real evaluation.

First, in this process, the CPU cost of one `Rule.allows` of the same rule compiled into a Python
function (chanctl/rules/compiled.py, what the server runs) and left to the `cel` library, and of a
rule outside the compiled subset (a macro); for the library, with and without the two things that
speed it up (the rewriting of static paths and the remembered decisions: "cold" pays for looking
up and storing a decision, "not remembering" does neither).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chanctl.rules import JOIN_VARIABLES, Expression, Rule, compile_rule, syntax  # noqa: E402
from chanctl.rules.prune import Pruner  # noqa: E402
from chanctl.tokens import TokenSigner  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
RULE = (
    'topic.id in data.rooms && (("public" in data.rooms[topic.id] && data.rooms[topic.id].public) || '
    '("members" in data.rooms[topic.id] && user.id in data.rooms[topic.id].members))'
)


MEMBERS = [42, 7, *range(1000, 1020)]
"""Each room's members: 2,000 such rooms stay under the 100,000 values a data_file may hold."""


def write_config(directory: Path, rooms: int) -> Path:
    (directory / "rooms.json").write_text(json.dumps({"rooms": {str(i): {"members": MEMBERS} for i in range(rooms)}}))
    config = directory / "bench.yaml"
    config.write_text(
        f"auth: {{secret: {SECRET}}}\n"
        f"server: {{max_channels: {rooms * 2}, outbound_buffer: 64MiB, rate_limit: null}}\n"
        "data_file: rooms.json\n"
        "topics:\n"
        '  "open:{id}": {join: true}\n'
        f"  \"room:{{id}}\": {{join: '{RULE}'}}\n"
    )
    return config


MACRO_RULE = "topic.id in data.rooms && data.rooms[topic.id].members.exists(m, m == user.id)"
"""A rule outside the compiled subset (a macro): the library always evaluates it."""


def micro(rooms: int, calls: int = 5000, runs: int = 7) -> None:
    """Median µs of CPU per ``Rule.allows``, compiled and in the library, interleaved within each run.

    The library path has two optimisations that this measures: the variables rewritten so static
    paths are scalars (``flatten``: "not flattened" is without it) and remembered decisions ("cold"
    is a new user each call, "remembered" the same user again). CPU time (``process_time``), not
    wall time, so other processes on the shared machine count less.
    """
    data = json.loads(json.dumps({"rooms": {str(i): {"members": MEMBERS} for i in range(rooms)}}))
    cold = [{"user": {"id": 5000 + i}, "topic": {"id": str(i % rooms), "name": f"room:{i % rooms}"}, "params": {}, "data": data}
            for i in range(calls)]
    warm = [{**variables, "user": {"id": 42}} for variables in cold]

    def cpu(rule: Rule, cases: list[dict[str, object]], clear: bool = True) -> float:
        if clear:
            rule._decisions.clear()
        start = time.process_time()
        for variables in cases:
            rule.allows(variables)
        return (time.process_time() - start) / len(cases) * 1e6

    def forgetful(rule: Rule, cases: list[dict[str, object]]) -> float:
        """As ``cpu``, without looking up or storing a decision."""
        assert rule.expression is not None
        evaluate = rule.expression.evaluate
        start = time.process_time()
        for variables in cases:
            evaluate(variables)
        return (time.process_time() - start) / len(cases) * 1e6

    for label, source in (("chat rule", RULE), ("macro rule", MACRO_RULE)):
        compiled = compile_rule(source, JOIN_VARIABLES, frozenset({"id"}))
        assert compiled.expression is not None and compiled.expression.tree is not None
        library = Rule(source, dataclasses.replace(compiled.expression, fast=None))
        tree = compiled.expression.tree
        unflattened = Rule(source, Expression(source, syntax.cel_compile(source), tree, Pruner(source, tree, tree, []), None))
        variants = {
            "cel library, cold": lambda: cpu(library, cold),
            "  not flattened": lambda: cpu(unflattened, cold),
            "  not remembering": lambda: forgetful(library, cold),
            "  remembered": lambda: (cpu(library, warm), cpu(library, warm, clear=False))[1],
        }
        if compiled.expression.fast is not None:
            variants = {"compiled, cold": lambda: cpu(compiled, cold), **variants}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(runs):
            for name, measure_ in variants.items():
                times[name].append(measure_())
        for name, values in times.items():
            print(f"  {label}, Rule.allows {name:20} {statistics.median(values):6.2f} µs CPU")


def start_server(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    said = []
    while True:
        line = proc.stderr.readline()
        said.append(line)
        if not line:
            raise SystemExit("chanctl serve exited:\n" + "".join(said))
        if " at ws://" in line:
            return proc, line.split(" at ", 1)[1].split()[0]


def cpu_seconds(pid: int) -> float:
    """The server's CPU time so far, in ns resolution (schedstat), not 10 ms ticks (stat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


async def round_trip(ws: websockets.ClientConnection, frames: list[str]) -> None:
    for frame in frames:
        await ws.send(frame)
    pending = len(frames)
    while pending:
        reply = json.loads(await ws.recv())
        if reply[3] == "phx_reply":
            if reply[4]["status"] != "ok":
                raise SystemExit(f"unexpected reply {reply}")
            pending -= 1


async def measure(ws: websockets.ClientConnection, prefix: str, joins: int, pid: int) -> tuple[float, float]:
    join = [json.dumps([str(i), str(i), f"{prefix}:{i}", "phx_join", {}]) for i in range(joins)]
    leave = [json.dumps([str(i), f"l{i}", f"{prefix}:{i}", "phx_leave", {}]) for i in range(joins)]
    cpu, start = cpu_seconds(pid), time.perf_counter()
    await round_trip(ws, join)
    elapsed, used = time.perf_counter() - start, cpu_seconds(pid) - cpu
    await round_trip(ws, leave)
    return joins / elapsed, used / joins * 1e6


async def main(joins: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(write_config(Path(tmp), joins))
        try:
            signer = TokenSigner(SECRET)
            results: dict[str, list[tuple[float, float]]] = {"open": [], "room": [], "cold": []}
            async with websockets.connect(f"{url}?token={signer.mint(42)}&vsn=2.0.0", max_size=None) as ws:
                await measure(ws, "open", joins, proc.pid)  # warm up both paths
                await measure(ws, "room", joins, proc.pid)
                for rep in range(reps):
                    for prefix in ("open", "room") if rep % 2 else ("room", "open"):  # neither always goes first
                        results[prefix].append(await measure(ws, prefix, joins, proc.pid))
            # Cold last: a new user per repetition, so no decision was made before (and the warm
            # figures above were not measured with these users' decisions evicting theirs).
            for rep in range(reps):
                async with websockets.connect(f"{url}?token={signer.mint(1000 + rep)}&vsn=2.0.0", max_size=None) as cold:
                    results["cold"].append(await measure(cold, "room", joins, proc.pid))
        finally:
            proc.terminate()
            proc.wait()
    rate = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    print(f"{joins} joins x {reps} reps, medians")
    print(f"  join: true      {rate['open']:9.0f} joins/s  {cpu['open']:6.1f} µs server CPU/join")
    for name, label in (("room", "CEL rule, warm"), ("cold", "CEL rule, cold")):
        print(f"  {label:15} {rate[name]:9.0f} joins/s  {cpu[name]:6.1f} µs server CPU/join  "
              f"ratio to true: throughput {rate[name] / rate['open']:.3f}, CPU per join {cpu[name] / cpu['open']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    micro(args.joins)
    asyncio.run(main(args.joins, args.reps))
