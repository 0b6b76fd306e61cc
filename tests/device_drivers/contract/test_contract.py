"""The driver contract: every family, against its simulator, through the same checks.

start (open, first reading), read (readings of the family's kinds, each payload its wire
model), bad input (rejected, counted in health, logged, and reading goes on), unplug
(``readings()`` ends or raises DeviceUnavailableError, health says down), reconnect (a new
driver opens the device plugged in again and reads), stop (close is idempotent, the driver
can be opened again, and no task or file descriptor is left). Waiting is on conditions with
deadlines, never on a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from device_drivers.base import DeviceUnavailableError, Driver, DriverState, Reading
from storegate.wire import PAYLOAD_MODELS
from tests.conftest import eventually
from tests.device_drivers.collect import Collector
from tests.device_drivers.contract.rigs import DEVICE_ID, RIGS, Rig

DEADLINE_S = 10.0
# What every family's health says of its rejects: "<reason>: <detail> (rejected <n> <what>)".
REJECTED = re.compile(r"\(rejected (\d+) ")


@pytest.fixture(params=RIGS, ids=[rig.name for rig in RIGS])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """One family's simulated device, plugged in."""
    async with request.param(tmp_path) as plugged:
        yield plugged


def only_rigs(applies: Callable[[type[Rig]], bool]) -> pytest.MarkDecorator:
    """A check that applies to some families only runs for those (a GPIO pin has no frame to garble, say)."""
    chosen = [rig for rig in RIGS if applies(rig)]
    return pytest.mark.parametrize("rig", chosen, ids=[rig.name for rig in chosen], indirect=True)


class Reader(Collector):
    """Reads a driver's readings in a task, and prompts the device for more."""

    async def more(self, rig: Rig, *, than: int) -> Reading:
        """Prompt the device and wait for a reading beyond the first ``than``."""
        await rig.prompt()
        await until(lambda: len(self.readings) > than or self.ended, f"reading {than + 1}")
        assert not self.ended, f"readings() ended: {self.error!r}"
        return self.readings[than]


async def until(probe: Callable[[], object], what: str) -> None:
    """Wait for ``probe()`` to be truthy, failing after the deadline."""

    async def check() -> object:
        return probe()

    await eventually(check, timeout=DEADLINE_S, interval=0.005, what=what)


def rejected(driver: Driver) -> int:
    """How many rejects the driver's health counts (0 before the first)."""
    match = REJECTED.search(driver.health().last_error or "")
    return 0 if match is None else int(match[1])


def open_fds() -> set[str]:
    """This process's open file descriptors."""
    return set(os.listdir("/proc/self/fd"))


def check_reading(rig: Rig, reading: Reading) -> None:
    """A reading of the family's kinds, for the device, with a payload its wire model accepts."""
    assert reading.kind in rig.kinds
    assert reading.device_id == DEVICE_ID
    assert reading.ts.tzinfo is not None
    PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)


async def test_start_opens_and_reads(rig: Rig) -> None:
    driver = rig.driver()
    assert driver.health().state is DriverState.CLOSED
    async with driver:
        assert driver.health().state is DriverState.UP
        reader = Reader(driver)
        first = await reader.more(rig, than=0)
        await reader.stop()
        health = driver.health()
        assert health.state is DriverState.UP
        assert health.readings_total >= 1
        assert health.last_reading_at is not None
    check_reading(rig, first)


async def test_readings_are_of_the_family_kinds_and_payload_models(rig: Rig) -> None:
    async with rig.driver() as driver:
        reader = Reader(driver)
        for n in range(4):
            check_reading(rig, await reader.more(rig, than=n))
        await reader.stop()
    assert driver.health().readings_total >= 4


@only_rigs(lambda rig: rig.has_bad_input)
async def test_bad_input_is_rejected_counted_logged_and_reading_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig.driver() as driver:
        reader = Reader(driver)
        await reader.more(rig, than=0)
        assert rejected(driver) == 0
        with caplog.at_level(logging.WARNING):
            await rig.garble()
            await until(lambda: rejected(driver) >= 1, "the bad input counted in health")
        logged = [r for r in caplog.records if r.levelno == logging.WARNING and DEVICE_ID in r.getMessage()]
        assert any("reject" in r.getMessage() for r in logged), [r.getMessage() for r in logged]
        count = len(reader.readings)
        check_reading(rig, await reader.more(rig, than=count))
        assert driver.health().state is DriverState.UP
        await reader.stop()


@only_rigs(lambda rig: rig.can_unplug)
async def test_unplug_ends_readings_and_health_says_down(rig: Rig) -> None:
    async with rig.driver() as driver:
        reader = Reader(driver)
        await reader.more(rig, than=0)
        await rig.unplug()
        await until(lambda: reader.ended, "readings() to end")
        assert reader.error is None or isinstance(reader.error, DeviceUnavailableError), repr(reader.error)
        assert driver.health().state is DriverState.DOWN
    assert driver.health().state is DriverState.CLOSED


async def test_reconnect_opens_the_device_again_and_reads(rig: Rig) -> None:
    async with rig.driver() as driver:
        reader = Reader(driver)
        await reader.more(rig, than=0)
        if rig.can_unplug:
            await rig.unplug()
            await until(lambda: reader.ended, "readings() to end")
        await reader.stop()
    if rig.can_unplug:
        await rig.plug()
    # A new driver from the same factory, as the supervisor makes after an outage.
    async with rig.driver() as again:
        reader = Reader(again)
        check_reading(rig, await reader.more(rig, than=0))
        assert again.health().state is DriverState.UP
        await reader.stop()


async def test_stop_is_idempotent_reopenable_and_leaves_nothing_behind(rig: Rig) -> None:
    tasks = asyncio.all_tasks()
    fds = open_fds()
    driver = rig.driver()
    for _ in range(2):  # reusable, not re-entrant: opened again after it was closed
        async with driver:
            reader = Reader(driver)
            check_reading(rig, await reader.more(rig, than=0))
            await reader.stop()
        await driver.__aexit__(None, None, None)  # closing again changes nothing
        assert driver.health().state is DriverState.CLOSED
    await until(lambda: asyncio.all_tasks() <= tasks, "the driver's tasks to end")
    await until(lambda: open_fds() <= fds, "the driver's file descriptors to close")
