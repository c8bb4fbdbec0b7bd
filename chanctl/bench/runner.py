"""The coordinator: starts the worker processes, runs a scenario's phases, gathers the figures.

It holds no client sockets: everything it does is timing (one ``go`` time for all workers), relaying
the fan-out's completed counts to the publisher in worker 0, waiting for the workers' reports, and
adding up what they measured.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from chanctl.bench.control import Control
from chanctl.bench.plan import Plan, now_us
from chanctl.bench.stats import Histogram, Tally
from chanctl.bench.worker import loop_name, worker_main

__all__ = ["Outcome", "run"]

GO_DELAY_US = 200_000
"""How far ahead the coordinator sets the ``go`` time, so that every worker has it before then."""
PROGRESS_EVERY = 1.0

Outcome = dict[str, Any]
"""What :func:`run` returns: the measured figures, merged, for :mod:`chanctl.bench.report`."""


class Coordinator:
    def __init__(self, plan: Plan, tokens: list[str | None], progress: Callable[[dict[str, Any]], None] | None,
                 note: Callable[[str], None]):
        self.plan = plan
        self.tokens = tokens
        self.progress = progress
        self.note = note
        self.controls: list[Control] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.counters: list[dict[str, int]] = []
        self.ready: dict[int, dict[str, Any]] = {}
        self.settled: dict[str, dict[int, dict[str, Any]]] = {}
        self.results: dict[int, dict[str, Any]] = {}
        self.dead: list[str] = []
        self.changed = asyncio.Event()
        self.errors = Tally()
        self.phase = "setup"
        self.complete = True
        self._last = (time.monotonic(), 0)

    # -- workers -----------------------------------------------------------------------------

    def start_workers(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds an event loop
        total = self.plan.total_clients()
        for w in range(self.plan.workers):
            clients = list(range(w, total, self.plan.workers))
            tokens = {i: self.tokens[i] for i in clients}
            if w == 0 and self.plan.scenario == "fanout":  # worker 0 holds the publisher, client K
                tokens[self.plan.clients] = self.tokens[self.plan.clients]
            ours, theirs = context.Pipe()
            proc = context.Process(target=worker_main, args=(self.plan, w, clients, tokens, theirs),
                                   name=f"chanctl-bench-{w}", daemon=True)
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.controls.append(Control(ours, on_message=lambda message, w=w: self.dispatch(w, message)))
            self.counters.append({})

    def dispatch(self, w: int, message: tuple[str, Any]) -> None:
        kind, data = message
        if kind == "progress":
            self.counters[w] = data
        elif kind == "ready":
            self.ready[w] = data
        elif kind == "completed":  # fan-out: to the publisher, in worker 0
            self.controls[0].send("peer", [w, data])
        elif kind == "settled":
            self.settled.setdefault(data.get("phase", "done"), {})[w] = data
        elif kind == "result":
            self.results[w] = data
        elif kind == "note":
            self.note(str(data))
        elif kind == "eof" and w not in self.results:
            self.procs[w].join(1)
            self.dead.append(f"worker {w} exited (code {self.procs[w].exitcode})")
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait for ``predicate`` as reports arrive; False at ``deadline`` (loop time) or when a worker died."""
        loop = asyncio.get_running_loop()
        while not predicate():
            remaining = deadline - loop.time()
            if self.dead or remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def broadcast(self, kind: str, data: Any = None) -> None:
        for control in self.controls:
            control.send(kind, data)

    def everyone(self, phase: str) -> Callable[[], bool]:
        return lambda: len(self.settled.get(phase, {})) == len(self.controls)

    # -- progress ----------------------------------------------------------------------------

    async def report_progress(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_EVERY)  # a display period, not a wait for an event
            if self.progress is None:
                continue
            totals = Tally()
            for counters in self.counters:
                totals.merge(counters)
            now = time.monotonic()
            moved = totals.get("delivered", 0) or totals.get("joined", 0)
            then, before = self._last
            self._last = (now, moved)
            self.progress({"phase": self.phase, "elapsed": now - started, "per_s": (moved - before) / (now - then),
                           "expected": self.plan.total_clients(), **totals})

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        self.start_workers()
        ticker = loop.create_task(self.report_progress())
        try:
            outcome = await self._phases(loop)
        finally:
            ticker.cancel()
            self.broadcast("stop")
            await self.until(lambda: len(self.results) == len(self.controls), loop.time() + 10)
            for control in self.controls:
                control.close()
            for proc in self.procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
        errors = Tally(self.errors)
        histograms: dict[str, Histogram] = {}
        cpu = []
        for w in sorted(self.results):
            result = self.results[w]
            errors.merge(result["errors"])
            cpu.append(result["cpu"])
            for name, value in result.items():
                if isinstance(value, dict) and "buckets" in value:
                    histograms.setdefault(name, Histogram()).merge(Histogram.from_dict(value))
        for message in self.dead:
            errors.add(message)
            self.complete = False
        if "publisher" in self.results.get(0, {}):
            outcome.update(self.results[0]["publisher"])
        outcome.update(errors=dict(errors), histograms=histograms, cpu=cpu, complete=self.complete,
                       results=[self.results[w] for w in sorted(self.results)])
        return outcome

    async def _phases(self, loop: asyncio.AbstractEventLoop) -> Outcome:
        plan = self.plan
        if not await self.until(lambda: len(self.ready) == len(self.controls), loop.time() + plan.time_limit):
            self.complete = False
            return {"setup_complete": False}
        self.phase = "measure"
        outcome: Outcome = {"setup": {"connected": sum(r["connected"] for r in self.ready.values()),
                                      "joined": sum(r["joined"] for r in self.ready.values())}}
        deadline = loop.time() + plan.time_limit
        scenario = getattr(self, f"_{plan.scenario}")
        cpu0 = time.process_time()
        outcome.update(await scenario(deadline))
        outcome["coordinator_cpu_s"] = round(time.process_time() - cpu0, 3)  # the fan-out publisher's, mostly
        return outcome

    def _go(self, **extra: Any) -> int:
        at = now_us() + GO_DELAY_US
        self.broadcast("go", {"at": at, **extra})
        return at

    def _wait_settled(self, phase: str, deadline: float) -> Any:
        return self.until(self.everyone(phase), deadline)

    def _latest(self, phase: str, key: str = "at") -> int:
        return max((data[key] or 0 for data in self.settled.get(phase, {}).values()), default=0)

    async def _connect(self, deadline: float) -> Outcome:
        at = self._go()
        self.complete = await self._wait_settled("done", deadline)
        return {"start": at, "end": self._latest("done") or now_us()}

    async def _reconnect(self, deadline: float) -> Outcome:
        at = self._go()
        self.complete = await self._wait_settled("done", deadline)
        dropped = sum(data["dropped"] for data in self.settled.get("done", {}).values())
        return {"start": at, "end": self._latest("done") or now_us(), "dropped": dropped}

    async def _chat(self, deadline: float) -> Outcome:
        at = self._go()
        self.complete = await self._wait_settled("done", deadline)
        return {"start": at, "end": self._latest("done") or now_us()}

    async def _presence(self, deadline: float) -> Outcome:
        total = self.plan.total_clients()
        keys = len(set(self.tokens[:total]))
        leavers = total // 2
        stayer_keys = len(set(self.tokens[leavers:total]))
        at = self._go(keys=keys)
        joined = await self._wait_settled("join", deadline)
        outcome: Outcome = {"start": at, "join_settled": self._latest("join") if joined else None, "keys": keys}
        if not joined:
            self.complete = False
            return outcome
        leave_at = now_us() + GO_DELAY_US
        self.broadcast("leave", {"at": leave_at, "keys": stayer_keys, "leavers": leavers})
        left = await self._wait_settled("leave", deadline)
        self.complete = left
        outcome.update(leave_start=leave_at, leave_settled=self._latest("leave") if left else None,
                       leavers=leavers, stayer_keys=stayer_keys)
        return outcome

    async def _fanout(self, deadline: float) -> Outcome:
        """Worker 0 publishes; the others' completed counts are relayed to it (see ``dispatch``)."""
        self._go()
        self.complete = await self.until(lambda: 0 in self.settled.get("done", {}), deadline)
        return {}


def run(plan: Plan, tokens: list[str | None], progress: Callable[[dict[str, Any]], None] | None = None,
        note: Callable[[str], None] = lambda text: None) -> Outcome:
    """Run ``plan`` with ``tokens[i]`` for client ``i`` (the fan-out publisher is client ``clients``).

    Workers are spawned processes (no fork of a process that may hold an event loop or threads), so
    a script that calls this must guard its entry point with ``if __name__ == "__main__":``, as any
    multiprocessing program does. ``progress`` gets a snapshot of the summed counters once a second.
    """
    started = time.time()

    async def main() -> Outcome:
        return await Coordinator(plan, tokens, progress, note).run()

    outcome = asyncio.run(main())
    outcome["started_at"] = started
    outcome["loop"] = loop_name()  # what the workers ran on (they spawn with this environment)
    return outcome

