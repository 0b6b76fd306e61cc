"""Running device drivers: which driver a config names, and a supervisor that keeps each one going.

Each device has its own :class:`DeviceSupervisor` task. A driver that fails to
open, raises, or stops producing readings is closed and opened again after a
jittered, capped backoff, without disturbing the other devices. Only state
changes are logged: one warning when a device goes down, one line when it is
back; the failures in between are at debug level.

A driver that can replay its device's numbered readings (:class:`Resumable`) is told,
before every open, the highest number the outbox has committed for it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from device_drivers.base import DeviceUnavailableError, Driver, DriverError, Reading, Resumable
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import ProfileCatalog, create_driver, parse_settings
from device_drivers.simulated.sequence import SimulatedSequenceConfig, SimulatedSequenceDevice
from device_drivers.simulated.temperature import SimulatedSensorConfig, SimulatedTemperatureSensor
from edge_agent.config import DeviceConfig, ProfiledDeviceConfig
from edge_agent.errors import AgentStoppedError, InvalidReadingError
from edge_agent.timing import Backoff
from storegate import wire
from storegate.clock import Clock
from storegate.logs import worth_logging
from storegate.wire import Command, CommandResult, DeviceIdentity, EventKind

log = structlog.get_logger(__name__)

DriverFactory = Callable[[DeviceConfig], Driver]


def _simulated_temperature(config: DeviceConfig) -> Driver:
    assert isinstance(config, SimulatedSensorConfig)  # the table below pairs them
    return SimulatedTemperatureSensor(config=config)


def _simulated_sequence(config: DeviceConfig) -> Driver:
    assert isinstance(config, SimulatedSequenceConfig)
    return SimulatedSequenceDevice(config=config)


# The driver for each ``driver = "..."`` value of a [[devices]] entry.
DRIVERS: Final[dict[str, DriverFactory]] = {
    "simulated-temperature": _simulated_temperature,
    "simulated-sequence": _simulated_sequence,
}


def make_driver(config: DeviceConfig) -> Driver:
    """A new driver for one configured simulated device (profiled devices need a :class:`DriverBuilder`)."""
    if isinstance(config, ProfiledDeviceConfig):
        raise TypeError(f"{config.device_id}: a profiled device is built by a DriverBuilder with the profile catalog")
    return DRIVERS[config.driver](config)


class DriverBuilder:
    """Builds the driver of any [[devices]] entry: simulated ones by their ``driver``, real ones by their profile."""

    def __init__(self, *, catalog: ProfileCatalog) -> None:
        self.catalog = catalog

    def __call__(self, config: DeviceConfig, identity: DeviceIdentity | None = None) -> Driver:
        """A new driver for ``config``; ``identity`` is what a hot-plugged device said about itself."""
        if not isinstance(config, ProfiledDeviceConfig):
            return make_driver(config)
        if config.address is None:
            raise DeviceUnavailableError(f"{config.device_id} is not plugged in")
        profile = self.catalog.get(config.profile)
        settings = parse_settings(profile, config.settings)
        binding = DeviceBinding(device_id=config.device_id, address=config.address, identity=identity)
        return create_driver(profile, binding, settings)


class DeviceSupervisor:
    """Runs one device's driver until cancelled, reopening it after failures; its state is for health reports."""

    def __init__(
        self,
        *,
        config: DeviceConfig,
        factory: DriverFactory,
        record: Callable[[Reading], Awaitable[None]],
        backoff: Backoff,
        clock: Clock,
        rng: random.Random,
        committed_mark: Callable[[str], int | None] = lambda device_id: None,
        identity: DeviceIdentity | None = None,
    ) -> None:
        self.config = config
        self.device_id = config.device_id
        self.identity = identity
        # Real (profiled) devices report their lifecycle as events; simulated test instruments do not.
        self.reports_lifecycle = isinstance(config, ProfiledDeviceConfig)
        self._driver: Driver | None = None  # while open, for commands
        self._factory = factory
        self._record = record
        self._committed_mark = committed_mark
        self._backoff = backoff
        self._clock = clock
        self._rng = rng
        self.up = False
        self.failures = 0  # consecutive, since the last reading
        self.since = clock.monotonic()  # when ``up`` last changed
        self.last_error: str | None = None
        self.rejected = 0
        self._opened = asyncio.Event()  # set when the driver is open and passing readings on (a restart waits on it)

    @property
    def driver(self) -> Driver | None:
        """The driver while it is open (its settings say, e.g., which shelves a camera watches), else None."""
        return self._driver

    def down_for(self, now: float) -> float | None:
        """Seconds since the device went down, or None while it works (or has not failed yet)."""
        return None if self.up or self.failures == 0 else now - self.since

    async def run(self) -> None:
        """Open the driver and pass its readings on, forever; returns only when the agent stops."""
        attempt = 0
        while True:
            failure: Exception
            try:
                driver = self._factory(self.config)
                if isinstance(driver, Resumable):
                    driver.resume_after(self._committed_mark(self.device_id))
                async with driver:
                    self._driver = driver
                    try:
                        # Up once open: a scanner or a door may rightly say nothing for hours.
                        await self._went_up()
                        async for reading in driver.readings():
                            attempt = 0  # the backoff restarts only once the device has really worked
                            await self._pass_on(reading)
                    finally:
                        self._driver = None
                failure = DeviceUnavailableError(f"{self.device_id}: the driver stopped producing readings")
            except AgentStoppedError:
                return
            except Exception as err:  # any driver failure, its bugs included, restarts only this device
                failure = err
            attempt += 1
            delay = self._backoff.delay(attempt, self._rng)
            try:
                await self._went_down(failure, retry_in_s=delay)
            except AgentStoppedError:
                return
            await self._clock.sleep(delay)

    async def wait_up(self, timeout_s: float) -> bool:
        """Wait until the driver has opened (at most ``timeout_s``); whether it did."""
        try:
            await asyncio.wait_for(self._opened.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def execute(self, command: Command) -> CommandResult:
        """Run a hub command on the device; DeviceUnavailableError while its driver is not open."""
        driver = self._driver
        if driver is None:
            raise DeviceUnavailableError(f"{self.device_id} is not available ({self.last_error or 'not open yet'})")
        return await driver.execute(command)

    async def _emit(self, kind: str, payload: wire.WireModel) -> None:
        reading = Reading(
            device_id=self.device_id,
            kind=kind,
            ts=self._clock.now(),
            payload=payload.model_dump(mode="json", exclude_none=True),
        )
        await self._pass_on(reading)

    async def _pass_on(self, reading: Reading) -> None:
        try:
            await self._record(reading)
        except InvalidReadingError as err:
            self.rejected += 1
            # The 1st, 10th, 100th...: a device sending garbage every second does not flood the log.
            if worth_logging(self.rejected):
                log.warning("readings_rejected", device_id=self.device_id, count=self.rejected, error=str(err))

    async def _went_up(self) -> None:
        now = self._clock.monotonic()
        if self.failures:
            log.info(
                "device_recovered",
                device_id=self.device_id,
                down_for_s=round(now - self.since, 1),
                failures=self.failures,
            )
        else:
            log.info("device_up", device_id=self.device_id)
        self.up = True
        self.failures = 0
        self.last_error = None
        self.since = now
        self._opened.set()
        if self.reports_lifecycle:
            assert isinstance(self.config, ProfiledDeviceConfig)
            await self._emit(
                EventKind.DEVICE_ATTACHED,
                wire.DeviceAttached(
                    profile=self.config.profile, address=self.config.address or "?", identity=self.identity
                ),
            )

    async def _went_down(self, failure: Exception, *, retry_in_s: float) -> None:
        error = str(failure) or type(failure).__name__
        retry = round(retry_in_s, 1)
        first_of_outage = self.up or self.failures == 0
        if first_of_outage:
            # A driver bug (anything but a DriverError) gets its traceback, once per outage.
            details = {} if isinstance(failure, DriverError) else {"exc_info": failure}
            log.warning("device_down", device_id=self.device_id, error=error, retry_in_s=retry, **details)
            self.since = self._clock.monotonic()
        else:
            log.debug("device_still_down", device_id=self.device_id, error=error, retry_in_s=retry)
        self.up = False
        self.failures += 1
        self.last_error = error
        if first_of_outage and self.reports_lifecycle:
            # Once per outage, like the log: a device failing every few seconds is not an event stream.
            await self._emit(
                EventKind.DEVICE_ERROR, wire.DeviceError(error=error[:500], retry_in_s=retry, failures=self.failures)
            )
