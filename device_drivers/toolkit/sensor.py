"""What the environment sensors' drivers share: their readings, their bookkeeping and the polling loop.

Modbus RTU, serial line, 1-Wire and SHT3x sensors each report ``environment.reading`` events
(:class:`~storegate.wire.EnvironmentReading`) for their zone and count what they reject; all
but the line sensor (which prints on its own) poll every ``poll_interval_s``
(:meth:`SensorDriver.polled`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from device_drivers.base import DeviceUnavailableError, DriverHealth, Reading
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.rejects import RejectCounter
from device_drivers.toolkit.schedule import PollSchedule
from device_drivers.toolkit.silence import SilenceCounter
from storegate.clock import Clock
from storegate.wire import UNIT_OF, EnvironmentReading, EventKind, Quantity


def environment_reading(*, device_id: str, quantity: Quantity, value: float, zone: str | None, ts: datetime) -> Reading:
    """One ``environment.reading`` of ``quantity`` in its unit (the zone left out when None)."""
    payload = EnvironmentReading(quantity=quantity, value=value, unit=UNIT_OF[quantity], zone=zone)
    return Reading(
        device_id=device_id,
        kind=EventKind.ENVIRONMENT_READING,
        ts=ts,
        payload=payload.model_dump(mode="json", exclude_none=True),
    )


class SensorDriver:
    """Base of an environment sensor's driver: health, rejects, silences, readings and polling.

    Subclasses open the device and read it; the log events name the family's rejects
    (``reject_event``) and silences (``silence_events``: fallen silent, heard again).
    """

    def __init__(
        self,
        *,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Clock,
        logger: Any,
        reject_event: str = "reading_rejected",
        reject_noun: str = "readings",
        silence_events: tuple[str, str] = ("sensor_silent", "sensor_heard_again"),
    ) -> None:
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self.record = HealthRecord()
        device_id = binding.device_id
        self.rejects = RejectCounter(
            logger=logger, device_id=device_id, health=self.record, event=reject_event, noun=reject_noun
        )
        silent, back = silence_events
        self.silences = SilenceCounter(
            logger=logger, device_id=device_id, health=self.record, silent_event=silent, back_event=back
        )

    @property
    def rejected_total(self) -> int:
        """What was rejected (bad frames, lines, reads, bus errors) since the driver was made."""
        return self.rejects.total

    @property
    def timeouts_total(self) -> int:
        """Times the sensor was silent (no answer, no line in time) since the driver was made."""
        return self.silences.timeouts_total

    @property
    def readings_total(self) -> int:
        """Readings reported since the driver was made."""
        return self.record.readings_total

    def health(self) -> DriverHealth:
        """State, the last trouble (with its count) and the last reading, without I/O."""
        return self.record.snapshot()

    def check_open(self) -> None:
        """Raise DeviceUnavailableError unless the device is open."""
        if not self.record.is_up:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")

    def reading(self, quantity: Quantity, value: float, ts: datetime) -> Reading:
        """The reading of one measured value, counted in the driver's health."""
        self.record.read(ts)
        return environment_reading(
            device_id=self.binding.device_id, quantity=quantity, value=value, zone=self.settings.zone, ts=ts
        )

    def went_away(self, error: DeviceUnavailableError) -> None:
        """The device went away while being read: DOWN (a family may log it as well)."""
        self.record.down(error)

    async def polled(self, poll: Callable[[], AsyncIterator[Reading]]) -> AsyncIterator[Reading]:
        """``poll()``'s readings at once, then every ``poll_interval_s`` (a :class:`PollSchedule`), while open.

        DeviceUnavailableError (the device went away) ends it, after :meth:`went_away`.
        """
        self.check_open()
        schedule = PollSchedule(interval_s=self.settings.poll_interval_s, clock=self._clock)
        try:
            while self.record.is_up:
                async for reading in poll():
                    yield reading
                await schedule.wait()
        except DeviceUnavailableError as err:
            self.went_away(err)
            raise
