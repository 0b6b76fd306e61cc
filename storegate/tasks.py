"""Background tasks and their waits, written once for every long-lived loop of both sides.

The hub's consumer, its command and notification senders, its rules ticker and its WAL
checkpointer, and the agent's loops each run one coroutine for as long as the process runs.
:class:`BackgroundTask` starts it on the running loop, says whether it is alive and why it
ended, and stops it by cancelling and awaiting it, so a stop never leaves a task behind.
:func:`wait_for_event` is the wait such a loop makes between passes: woken by another part,
or at the latest when its period is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


async def wait_for_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed (None: no limit); whether it was set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 ``wait_for`` can swallow a
    cancellation that races the event being set, and a loop that misses its cancel never stops.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class BackgroundTask:
    """One named coroutine run in the background: ``start()``, then ``await stop()``; restartable after a stop."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        self._run = run
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the coroutine on the running loop; RuntimeError if it is already running."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._task = asyncio.create_task(self._run(), name=self.name)

    @property
    def running(self) -> bool:
        """Whether the task was started and has not ended."""
        return self._task is not None and not self._task.done()

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the task, if it ended by one (not by a stop)."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    def cancel(self) -> None:
        """Ask the task to end now, without waiting (``stop`` waits)."""
        if self._task is not None:
            self._task.cancel()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the task to end by itself; whether it has ended."""
        if self._task is None:
            return True
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended; a no-op when it is not running.

        A stop that is itself cancelled raises CancelledError as usual; the task still ends.
        """
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task})
