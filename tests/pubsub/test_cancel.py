"""cancel_and_wait ends a task even when its first cancel was swallowed (as Python 3.11's wait_for does)."""

from __future__ import annotations

import asyncio

from chanctl.pubsub.redis import cancel_and_wait


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again():
    started, swallowed = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # what wait_for does on 3.11 when the cancel meets a finished send
        await asyncio.Event().wait()  # carries on as if never cancelled

    task = asyncio.get_running_loop().create_task(stubborn())
    await started.wait()
    await cancel_and_wait(task)
    assert swallowed.is_set() and task.cancelled()


async def test_a_task_that_failed_is_waited_for_without_raising():
    async def broken() -> None:
        raise RuntimeError("logged where it happened")

    task = asyncio.get_running_loop().create_task(broken())
    await asyncio.wait({task})
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)


async def test_cancelled_while_waiting_it_still_waits_for_the_tasks():
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await release.wait()  # cleanup that takes a while, as a Redis session's does

    task = asyncio.get_running_loop().create_task(slow_to_stop())
    await started.wait()
    owner = asyncio.get_running_loop().create_task(cancel_and_wait(task))
    await asyncio.sleep(0)  # the owner is waiting for the task
    owner.cancel()
    await asyncio.sleep(0)
    assert not owner.done()  # it keeps waiting for the task
    release.set()
    await asyncio.wait({owner})
    assert owner.cancelled() and task.done()
