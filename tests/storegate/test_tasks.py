"""storegate.tasks.BackgroundTask: start, stop, restart, failure, and a stop that is itself cancelled."""

from __future__ import annotations

import asyncio

import pytest

from storegate.tasks import BackgroundTask, wait_for_event
from tests.conftest import eventually


async def test_a_started_task_runs_until_stopped_and_can_start_again() -> None:
    ticks = 0

    async def loop() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = BackgroundTask(loop, name="ticker")
    assert not task.running
    task.start()
    assert task.running

    async def ticked() -> bool:
        return ticks >= 3

    await eventually(ticked, timeout=5, what="the loop to run")
    with pytest.raises(RuntimeError, match="ticker is already running"):
        task.start()
    await task.stop()
    assert not task.running
    assert task.failure is None  # a stop is not a failure
    stopped_at = ticks
    await asyncio.sleep(0)
    assert ticks == stopped_at

    async def ticked_again() -> bool:
        return ticks > stopped_at

    task.start()
    await eventually(ticked_again, timeout=5, what="the restarted loop")
    await task.stop()
    await task.stop()  # idempotent


async def test_a_task_that_fails_says_why() -> None:
    async def fail() -> None:
        raise ValueError("device table is corrupt")

    task = BackgroundTask(fail, name="failing")
    task.start()
    assert await task.wait(timeout=5)
    assert not task.running
    assert isinstance(task.failure, ValueError)
    assert str(task.failure) == "device table is corrupt"
    await task.stop()  # nothing to stop; the failure stays readable
    assert isinstance(task.failure, ValueError)


async def test_a_cancelled_stop_is_cancelled_and_the_task_still_ends() -> None:
    release = asyncio.Event()
    ended = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # cleanup that takes a while
            ended.set()

    task = BackgroundTask(slow_to_stop, name="slow")
    task.start()
    await asyncio.sleep(0)
    stopper = asyncio.create_task(task.stop())
    await asyncio.sleep(0)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.wait_for(ended.wait(), timeout=5)
    assert not task.running


async def test_wait_for_event_says_whether_it_was_woken_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    waiter = asyncio.create_task(wait_for_event(event, None))
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.wait_for(waiter, timeout=5) is True
    assert await wait_for_event(event, 0) is True  # already set: no wait


async def test_wait_for_event_never_swallows_a_cancel_that_races_the_wakeup() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_for_event(event, 60))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()  # in the same turn as the wakeup: a loop that misses this never stops
    with pytest.raises(asyncio.CancelledError):
        await waiter
