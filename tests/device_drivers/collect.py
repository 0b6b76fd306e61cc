"""Reading a driver in the background, as the agent's supervisor does, for tests that watch what comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from device_drivers.base import Driver, DriverError, Reading


class Collector:
    """Consumes a driver's readings in a task, keeping them and the driver error that ended them."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.readings: list[Reading] = []
        self.error: DriverError | None = None
        self.ended = False
        self.task = asyncio.create_task(self._run(), name="test collector")

    async def _run(self) -> None:
        try:
            async for reading in self.driver.readings():
                self.readings.append(reading)
        except DriverError as err:
            self.error = err
        finally:
            self.ended = True

    def pairs(self) -> list[tuple[object, object]]:
        """(quantity, value) of each environment reading so far."""
        return [(r.payload["quantity"], r.payload["value"]) for r in self.readings]

    async def stop(self) -> None:
        """Stop reading (cancelling ``readings()``, as the supervisor does when the agent stops)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@asynccontextmanager
async def collecting(driver: Driver) -> AsyncIterator[Collector]:
    """A :class:`Collector` of ``driver`` while the block runs."""
    collector = Collector(driver)
    try:
        yield collector
    finally:
        await collector.stop()
