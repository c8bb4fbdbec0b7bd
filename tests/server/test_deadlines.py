"""Deadlines: every socket's idle and token deadlines in buckets, one loop timer per bucket."""

from __future__ import annotations

import asyncio
import logging

from chanctl.server.deadlines import Deadlines
from tests.support import TIMEOUT, RawClient


class Target:
    """Records when its deadline passed (loop time), and says so."""

    def __init__(self, fail: bool = False):
        self.at: float | None = None
        self.passed = asyncio.Event()
        self.fail = fail

    def deadline_passed(self) -> None:
        self.at = asyncio.get_running_loop().time()
        self.passed.set()
        if self.fail:
            raise RuntimeError("boom")


async def test_a_deadline_passes_never_before_its_time_and_in_one_timer_per_bucket():
    deadlines, loop = Deadlines(resolution=0.02), asyncio.get_running_loop()
    when = loop.time() + 0.05
    targets = [Target() for _ in range(50)]
    keys = {deadlines.add(when, target) for target in targets}
    assert len(keys) == 1 and len(deadlines) == 50
    await asyncio.wait_for(asyncio.gather(*(target.passed.wait() for target in targets)), TIMEOUT)
    assert all(target.at >= when for target in targets)
    assert len(deadlines) == 0


async def test_a_dropped_deadline_does_not_pass_and_a_failing_one_spares_the_others(caplog):
    deadlines, loop = Deadlines(resolution=0.02), asyncio.get_running_loop()
    when = loop.time() + 0.03
    dropped, failing, last = Target(), Target(fail=True), Target()
    deadlines.drop(deadlines.add(when, dropped), dropped)
    deadlines.add(when, failing)
    deadlines.add(when + 0.04, last)  # a later bucket: its timer comes after the first one's
    await asyncio.wait_for(last.passed.wait(), TIMEOUT)
    assert dropped.at is None and failing.at is not None
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["a deadline's action failed"]


async def test_a_closed_socket_leaves_no_deadline_behind(server, mint):
    """Each socket sets two (idle, token expiry); both go with it."""
    async with await RawClient.connect(server.url, mint(1)) as client:
        assert (await client.call(["1", "1", "room:lobby", "phx_join", {}]))[4]["status"] == "ok"
        assert len(server.deadlines) == 2
    await asyncio.wait_for(server.until_connections(0), TIMEOUT)
    assert len(server.deadlines) == 0
