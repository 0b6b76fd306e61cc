"""The line sensor driver: reads the lines a sensor prints and reports each quantity in them.

The sensor prints on its own schedule; the driver reads every line, parses it with the
profile's format (:func:`~.protocol.parse_line`) and yields one ``environment.reading``
per quantity, at most once per ``poll_interval_s`` (later lines within the interval are
read and checked, not reported). A line that is not the sensor's format (noise, a
broken checksum, a value outside the sensor's range, an over-long line) is counted in
``rejected_total`` and skipped. A sensor that falls silent is not a failure of the
driver: each ``silence_s`` without a line counts a timeout (``timeouts_total``), logged
once when it starts and once when lines come again, and reading goes on (the
environment monitor reports the sensor stale). Only the port going away (unplugged)
ends ``readings()``, with DeviceUnavailableError.

The address is the serial port: a device node (``/dev/ttyACM0``, a pty) or a pyserial URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType
from typing import Final, Self

import structlog

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    DriverHealth,
    DriverState,
    Reading,
)
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from device_drivers.serial_sensor.profile import SerialSensorProfile
from device_drivers.serial_sensor.protocol import LineRejectedError, Measurement, parse_line
from device_drivers.serialio import LineTooLongError, SerialTransport
from device_drivers.support import answer_ping
from storegate.logs import worth_logging
from storegate.wire import UNIT_OF, Command, CommandResult, EnvironmentReading, EventKind, utc_now

# A sensor printing exactly every poll interval is not halved by a little jitter in its timing.
_REPORT_SLACK: Final = 0.9

_log = structlog.get_logger(__name__)


class SerialSensorDriver:
    """Driver of one line sensor; create it with :func:`create`."""

    def __init__(
        self,
        *,
        profile: SerialSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self._transport: SerialTransport | None = None
        self._state = DriverState.CLOSED
        self.lines_total = 0
        self.readings_total = 0
        self.rejected_total = 0
        self.timeouts_total = 0
        self._reject_run = 0
        self._talking: bool | None = None
        self._last_line_at: float | None = None  # loop time
        self._last_error: str | None = None
        self._last_reading_at: datetime | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._transport is not None:
            raise RuntimeError("the driver is already open")
        self._state = DriverState.OPENING
        transport = SerialTransport(
            url=self.binding.address, link=self.profile.serial, max_line=self.profile.line.max_length
        )
        try:
            await transport.__aenter__()
        except DeviceUnavailableError as err:
            self._state = DriverState.DOWN
            self._last_error = str(err)
            raise
        self._transport = transport
        self._state = DriverState.UP
        _log.info("serial sensor opened", device_id=self.binding.device_id, port=self.binding.address)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        transport, self._transport = self._transport, None
        self._state = DriverState.CLOSED
        if transport is not None:
            await transport.close()

    # ------------------------------------------------------------------ reading

    async def readings(self) -> AsyncIterator[Reading]:
        """One reading per quantity in each reported line; raises DeviceUnavailableError when the port goes."""
        transport = self._transport
        if transport is None or self._state is not DriverState.UP:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        loop = asyncio.get_running_loop()
        fmt = self.profile.line
        next_report = loop.time()
        try:
            while self._transport is transport:
                try:
                    line = await transport.read_line(timeout=fmt.silence_s)
                except TimeoutError:
                    self._silent()
                    continue
                except LineTooLongError as err:
                    self._heard(loop.time())
                    self._reject(str(err))
                    continue
                self._heard(loop.time())
                try:
                    result = parse_line(line, fmt)
                except LineRejectedError as err:
                    self._reject(f"{err} (line {line[:40]!r})")
                    continue
                for reason in result.rejects:
                    self._reject(reason)
                if not result.rejects:
                    self._reject_run = 0
                now = loop.time()
                if now < next_report or not result.measurements:
                    continue
                next_report = now + _REPORT_SLACK * self.settings.poll_interval_s
                for measurement in result.measurements:
                    yield self._reading(measurement)
        except DeviceUnavailableError as err:
            self._state = DriverState.DOWN
            self._last_error = str(err)
            _log.warning("serial sensor port went away", device_id=self.binding.device_id, error=str(err))
            raise

    def _reading(self, measurement: Measurement) -> Reading:
        ts = self._clock()
        payload = EnvironmentReading(
            quantity=measurement.quantity,
            value=measurement.value,
            unit=UNIT_OF[measurement.quantity],
            zone=self.settings.zone,
        ).model_dump(mode="json", exclude_none=True)
        self.readings_total += 1
        self._last_reading_at = ts
        return Reading(device_id=self.binding.device_id, kind=EventKind.ENVIRONMENT_READING, ts=ts, payload=payload)

    # ------------------------------------------------------------------ trouble, counted

    def _reject(self, reason: str) -> None:
        self.rejected_total += 1
        self._reject_run += 1
        self._last_error = f"rejected {self.rejected_total} lines (last: {reason})"
        if worth_logging(self._reject_run):
            _log.warning(
                "serial sensor line rejected",
                device_id=self.binding.device_id,
                reason=reason,
                in_a_row=self._reject_run,
                rejected_total=self.rejected_total,
            )

    def _silent(self) -> None:
        self.timeouts_total += 1
        self._last_error = f"no line for {self.profile.line.silence_s:g} s ({self.timeouts_total} timeouts)"
        if self._talking is not False:
            _log.warning(
                "serial sensor silent",
                device_id=self.binding.device_id,
                port=self.binding.address,
                silence_s=self.profile.line.silence_s,
            )
        self._talking = False

    def _heard(self, now: float) -> None:
        self.lines_total += 1
        self._last_line_at = now
        if self._talking is False:
            _log.info(
                "serial sensor talking again", device_id=self.binding.device_id, timeouts_total=self.timeouts_total
            )
        self._talking = True

    # ------------------------------------------------------------------ commands, health

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: done when the sensor printed a line within ``silence_s`` (it cannot be asked), else failed."""
        if command.name != "ping":
            raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")
        now = asyncio.get_running_loop().time()
        age = None if self._last_line_at is None else now - self._last_line_at
        alive = self._state is DriverState.UP and age is not None and age <= self.profile.line.silence_s
        detail = f"pong (last line {age:.1f} s ago)" if alive and age is not None else "no recent line"
        return answer_ping(command, device_id=self.binding.device_id, now=self._clock(), detail=detail, ok=alive)

    def health(self) -> DriverHealth:
        """State, the last trouble (with the reject and timeout counts) and the last reading, without I/O."""
        return DriverHealth(
            state=self._state,
            last_error=self._last_error,
            last_reading_at=self._last_reading_at,
            readings_total=self.readings_total,
        )


def create(
    *, profile: SerialSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings
) -> SerialSensorDriver:
    """The driver of one line sensor."""
    return SerialSensorDriver(profile=profile, binding=binding, settings=settings)
