"""Polling on a drift-free schedule, on the driver's clock."""

from __future__ import annotations

from storegate.clock import Clock


class PollSchedule:
    """Ticks every ``interval_s`` from its creation; :meth:`wait` sleeps until the next one.

    The ticks do not drift with the time a poll takes. A poll slower than the interval (or a
    consumer that fell behind) gets the next tick at once, without a burst of missed ones.
    """

    def __init__(self, *, interval_s: float, clock: Clock) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._due = clock.monotonic()

    async def wait(self) -> None:
        """Sleep until the next tick (not at all when it is already past)."""
        self._due = max(self._due + self.interval_s, self._clock.monotonic())
        await self._clock.sleep(self._due - self._clock.monotonic())
