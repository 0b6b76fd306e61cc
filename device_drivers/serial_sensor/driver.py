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

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Final, Self

import structlog

from device_drivers.base import CommandNotSupportedError, DeviceUnavailableError, Reading
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from device_drivers.serial_sensor.profile import SerialSensorProfile
from device_drivers.serial_sensor.protocol import LineRejectedError, parse_line
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.sensor import SensorDriver
from device_drivers.toolkit.serialio import LineTooLongError, SerialTransport
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult

# A sensor printing exactly every poll interval is not halved by a little jitter in its timing.
_REPORT_SLACK: Final = 0.9

_log = structlog.get_logger(__name__)


class SerialSensorDriver(SensorDriver):
    """Driver of one line sensor; create it with :func:`create`."""

    def __init__(
        self,
        *,
        profile: SerialSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            binding=binding,
            settings=settings,
            clock=clock,
            logger=_log,
            reject_event="serial sensor line rejected",
            reject_noun="lines",
            silence_events=("serial sensor silent", "serial sensor talking again"),
        )
        self.profile = profile
        self._transport: SerialTransport | None = None
        self.lines_total = 0
        self._last_line_at: float | None = None  # monotonic

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._transport is not None:
            raise RuntimeError("the driver is already open")
        self.record.opening()
        transport = SerialTransport(
            url=self.binding.address, link=self.profile.serial, max_line=self.profile.line.max_length
        )
        try:
            await transport.__aenter__()
        except DeviceUnavailableError as err:
            self.record.down(err)
            raise
        self._transport = transport
        self.record.up()
        _log.info("serial sensor opened", device_id=self.binding.device_id, port=self.binding.address)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        transport, self._transport = self._transport, None
        self.record.closed()
        if transport is not None:
            await transport.close()

    # ------------------------------------------------------------------ reading

    async def readings(self) -> AsyncIterator[Reading]:
        """One reading per quantity in each reported line; raises DeviceUnavailableError when the port goes."""
        transport = self._transport
        self.check_open()
        assert transport is not None
        fmt = self.profile.line
        next_report = self._clock.monotonic()
        try:
            while self._transport is transport:
                try:
                    line = await transport.read_line(timeout=fmt.silence_s)
                except TimeoutError:
                    self.silences.silent(
                        f"no line for {fmt.silence_s:g} s", port=self.binding.address, silence_s=fmt.silence_s
                    )
                    continue
                except LineTooLongError as err:
                    self._heard()
                    self.rejects.reject("too_long", str(err))
                    continue
                self._heard()
                try:
                    result = parse_line(line, fmt)
                except LineRejectedError as err:
                    self.rejects.reject("bad_line", f"{err} (line {line[:40]!r})")
                    continue
                for reason in result.rejects:
                    self.rejects.reject("out_of_range", reason)
                if not result.rejects:
                    self.rejects.accepted()
                now = self._clock.monotonic()
                if now < next_report or not result.measurements:
                    continue
                next_report = now + _REPORT_SLACK * self.settings.poll_interval_s
                for measurement in result.measurements:
                    yield self.reading(measurement.quantity, measurement.value, self._clock.now())
        except DeviceUnavailableError as err:
            self.went_away(err)
            raise

    def went_away(self, error: DeviceUnavailableError) -> None:
        """The port went away: DOWN, and logged."""
        super().went_away(error)
        _log.warning("serial sensor port went away", device_id=self.binding.device_id, error=str(error))

    def _heard(self) -> None:
        self.lines_total += 1
        self._last_line_at = self._clock.monotonic()
        self.silences.heard()

    # ------------------------------------------------------------------ commands

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: done when the sensor printed a line within ``silence_s`` (it cannot be asked), else failed."""
        if command.name != "ping":
            raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")
        age = None if self._last_line_at is None else self._clock.monotonic() - self._last_line_at
        alive = self.record.is_up and age is not None and age <= self.profile.line.silence_s
        detail = f"pong (last line {age:.1f} s ago)" if alive and age is not None else "no recent line"
        return answer_ping(command, device_id=self.binding.device_id, now=self._clock.now(), detail=detail, ok=alive)


def create(
    *, profile: SerialSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings
) -> SerialSensorDriver:
    """The driver of one line sensor."""
    return SerialSensorDriver(profile=profile, binding=binding, settings=settings)
