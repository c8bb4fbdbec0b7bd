"""Token expiry timers: one ``loop.call_at`` per socket (what chanctl does) against one shared heap.

For N sockets: arm each one's timer, refresh each once (the timer moves), end them all, then see
what is left in memory. The shared heap is the textbook alternative: a heap of (due, seq, session)
with lazy deletion and one loop timer for its earliest entry. Medians of ``--reps`` runs.

    python benchmarks/bench_expiry.py --sockets 20000 --reps 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import itertools
import statistics
import time
import tracemalloc
from typing import Any


class PerSocket:
    """chanctl's shape: each socket holds one TimerHandle, cancelled when it ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    def arm(self, session: dict[str, Any], due: float) -> None:
        handle = session.get("h")
        if handle is not None:
            handle.cancel()
        session["h"] = self.loop.call_at(due, _fire, session)

    def end(self, session: dict[str, Any]) -> None:
        session.pop("h").cancel()


class SharedHeap:
    """One heap for every socket, one loop timer for its head; moved or ended entries go stale."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.heap: list[tuple[float, int, dict[str, Any]]] = []
        self.seq = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.head = float("inf")

    def arm(self, session: dict[str, Any], due: float) -> None:
        seq = next(self.seq)
        session["seq"] = seq
        heapq.heappush(self.heap, (due, seq, session))
        if due < self.head:
            self.head = due
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(due, self._run)

    def end(self, session: dict[str, Any]) -> None:
        session["seq"] = -1  # stale: skipped when popped, but held by the heap until then

    def _run(self) -> None:  # pragma: no cover - nothing fires within the benchmark
        pass


def _fire(session: dict[str, Any]) -> None:  # pragma: no cover - nothing fires within the benchmark
    pass


async def one_run(kind: type, sockets: int, traced: bool) -> tuple[float, float]:
    """µs per arm (untraced runs; tracemalloc slows allocation), bytes held per ended socket (traced)."""
    loop = asyncio.get_running_loop()
    gc.collect()
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if traced else 0
    scheduler = kind(loop)
    sessions: list[dict[str, Any]] = [{} for _ in range(sockets)]
    now = loop.time()
    started = time.perf_counter()
    for i, session in enumerate(sessions):
        scheduler.arm(session, now + 3600 + i)
    for i, session in enumerate(sessions):
        scheduler.arm(session, now + 7200 + i)  # a refresh moves every expiry
    elapsed = time.perf_counter() - started
    for session in sessions:
        scheduler.end(session)
    del sessions
    await asyncio.sleep(0)  # one loop turn: the loop drops cancelled handles only as it runs
    gc.collect()
    left = 0.0
    if traced:
        left = (tracemalloc.get_traced_memory()[0] - base) / sockets
        tracemalloc.stop()
    return elapsed / (2 * sockets) * 1e6, left


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.sockets} sockets: arm + one refresh each, then all end; medians of {args.reps} runs")
    for kind in (PerSocket, SharedHeap):
        per_arm = statistics.median([(await one_run(kind, args.sockets, False))[0] for _ in range(args.reps)])
        left = statistics.median([(await one_run(kind, args.sockets, True))[1] for _ in range(args.reps)])
        print(f"  {kind.__name__:<10} {per_arm:5.2f} µs per arm   {left:7.1f} bytes per ended socket still held")


if __name__ == "__main__":
    asyncio.run(main())
