"""CPU per client message in the sans-I/O socket core, two checkouts compared in one run.

    python benchmarks/bench_receive.py --before /tmp/before-checkout [--reps 7] [--n 20000]
    python benchmarks/bench_receive.py --one [--root CHECKOUT]      # one checkout, JSON on stdout

What a client message costs before any I/O: ``SocketProtocol.receive`` (decode, ref checks,
dispatch), the handler's reply queued and encoded, and ``data_to_send``; for a V2 push to a joined
channel with string refs (phoenix.js), the same with integer refs (V1-era clients), a V1 push, a
heartbeat, and a server push to the channel (what presence_state and intercepted broadcasts cost per
subscriber). A fan-out broadcast is encoded once per topic with null refs and is not in this path.

Each checkout runs in its own process (its own ``chanctl`` on sys.path); the processes alternate
(before, after, after, before, ...) and each figure is the median of ``--reps`` runs, so the
machine's load falls on both alike. Reported: ns per message and after/before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import ROOT, callgrind, checkout_args  # benchmarks/run.py (it imports no chanctl)


def measure(n: int, only: str | None = None) -> dict[str, float]:
    """ns per operation of each case (or of ``only``), in this process (``chanctl`` from sys.path)."""
    import orjson

    from chanctl.protocol import Router, SocketProtocol, V1Json, V2Json

    def setup(serializer, join_frame):
        router: Router[str] = Router()
        router.add("room:*", "room")
        proto = SocketProtocol(serializer, router)
        (join,) = proto.receive(join_frame)
        channel = proto.join_succeeded(join)
        proto.data_to_send()
        return proto, channel

    body = {"body": "hello there", "n": 7}

    def push_case(serializer, join_frame, frames):
        try:
            proto, _ = setup(serializer, join_frame)
        except Exception:  # a checkout that refuses these refs (before integer refs were taken)
            return None

        def run() -> None:
            for frame in frames:
                (deliver,) = proto.receive(frame)
                proto.reply(deliver.channel, deliver.ref, "ok", {})
                proto.data_to_send()
        return run

    def text(frame) -> str:
        return orjson.dumps(frame).decode()

    v2, v1 = V2Json(), V1Json()
    cases = {
        "v2 push, string refs": push_case(
            v2, text(["1", "1", "room:a", "phx_join", {}]), [text(["1", str(i), "room:a", "new_msg", body]) for i in range(n)]),
        "v2 push, integer refs": push_case(
            v2, text([1, 1, "room:a", "phx_join", {}]), [text([1, i, "room:a", "new_msg", body]) for i in range(n)]),
        "v1 push, string ref": push_case(
            v1, text({"topic": "room:a", "event": "phx_join", "payload": {}, "ref": "1"}),
            [text({"topic": "room:a", "event": "new_msg", "payload": body, "ref": str(i)}) for i in range(n)]),
    }
    heartbeat_proto, _ = setup(v2, text(["1", "1", "room:a", "phx_join", {}]))
    beats = [text([None, str(i), "phoenix", "heartbeat", {}]) for i in range(n)]

    def heartbeat() -> None:
        for frame in beats:
            heartbeat_proto.receive(frame)
            heartbeat_proto.data_to_send()
    cases["v2 heartbeat"] = heartbeat

    push_proto, push_channel = setup(v2, text(["1", "1", "room:a", "phx_join", {}]))

    def server_push() -> None:
        for _ in range(n):
            push_proto.push(push_channel, "presence_state", body)
            push_proto.data_to_send()
    cases["v2 server push"] = server_push

    results = {}
    for name, run in cases.items():
        if run is None or (only is not None and name != only):
            continue
        run()  # warm
        started = time.process_time()
        run()
        results[name] = (time.process_time() - started) / n * 1e9
    return results


def _code(root: Path, n: int, only: str | None = None) -> str:
    return (f"import sys, json; sys.path.insert(0, {str(root)!r}); sys.path.insert(1, {str(ROOT / 'benchmarks')!r}); "
            f"import bench_receive; print(json.dumps(bench_receive.measure({n}, {only!r})))")


def one(root: Path, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _code(root, n)], check=True, capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout)


def instructions(root: Path, n: int, case: str) -> float | None:
    """Instructions per message of ``case`` under callgrind: the difference between runs of 2n and
    n messages (each run passes twice: warm and measured), so start-up and set-up cancel out."""
    counts = []
    for size in (n, 2 * n):
        try:
            count, printed = callgrind(_code(root, size, case))
        except subprocess.CalledProcessError:
            return None
        if json.loads(printed.strip().splitlines()[-1]) == {}:
            return None  # the case does not exist in that checkout
        counts.append(count)
    return (counts[1] - counts[0]) / (2 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    checkout_args(parser, "messages per case and run")
    args = parser.parse_args()
    if args.instructions:
        print(f"| case | before instructions/msg | after | after/before |  (callgrind, {args.n} vs {2 * args.n} msgs)")
        print("|---|---|---|---|")
        for case in one(args.root, 10):
            before = instructions(args.before, args.n, case) if args.before else None
            after = instructions(args.root, args.n, case)
            assert after is not None
            ratio = f"{after / before:.3f}" if before else ""
            print(f"| {case} | {'(refused)' if before is None else f'{before:,.0f}'} | {after:,.0f} | {ratio} |")
        return
    if args.one or args.before is None:
        print(json.dumps(one(args.root, args.n), indent=1))
        return
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    order = ["before", "after", "after", "before"]
    for rep in range(args.reps):
        which = order[rep % 4]
        runs[which].append(one(args.before if which == "before" else args.root, args.n))
        other = "after" if which == "before" else "before"
        runs[other].append(one(args.before if other == "before" else args.root, args.n))
    print(f"| case | before ns/msg | after ns/msg | after/before |  (median of {args.reps} runs each, {args.n} msgs)")
    print("|---|---|---|---|")
    for case in runs["after"][0]:
        before = [r[case] for r in runs["before"] if case in r]
        after = statistics.median(r[case] for r in runs["after"])
        if not before:
            print(f"| {case} | (refused) | {after:,.0f} | |")
            continue
        median_before = statistics.median(before)
        print(f"| {case} | {median_before:,.0f} | {after:,.0f} | {after / median_before:.3f} |")


if __name__ == "__main__":
    main()
