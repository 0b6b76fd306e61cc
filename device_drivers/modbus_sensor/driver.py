"""The Modbus RTU sensor driver: polls the profile's registers with pymodbus and reports each quantity.

Every ``poll_interval_s`` the driver sends the reads :func:`~.protocol.plan_reads` plans
(one request per run of contiguous registers) and yields one ``environment.reading`` per
quantity. A sensor that does not answer is not a failure of the driver: the poll is
counted as a timeout (``timeouts_total``), logged once when the sensor falls silent and
once when it answers again, and polling goes on (the environment monitor wrapped around
this driver reports the sensor stale). A response that is not usable (CRC error,
garbage, an exception response, the wrong number of registers, a value outside the
sensor's range) is counted in ``rejected_total`` and skipped. Only the port going away
(the USB adapter unplugged) ends ``readings()``, with DeviceUnavailableError.

The address is the serial port (a device node or a pyserial URL) with an optional
``#unit=N`` suffix overriding the profile's unit id, e.g. ``/dev/ttyUSB0#unit=3``.
One driver owns the port: sensors sharing one RS-485 adapter are not supported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Self

import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    DriverError,
    DriverHealth,
    DriverState,
    Reading,
)
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.modbus_sensor.profile import ModbusSensorProfile, split_address
from device_drivers.modbus_sensor.protocol import (
    BlockResult,
    Measurement,
    ReadBlock,
    RegisterDecodeError,
    decode_block,
    diagnose_response,
    plan_reads,
)
from device_drivers.ports import DeviceBinding
from device_drivers.support import answer_ping
from storegate.logs import worth_logging
from storegate.wire import UNIT_OF, Command, CommandResult, EnvironmentReading, EventKind, utc_now

_log = structlog.get_logger(__name__)


class ModbusSensorDriver:
    """Driver of one Modbus RTU sensor; create it with :func:`create`."""

    def __init__(
        self,
        *,
        profile: ModbusSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self._blocks = plan_reads(profile.registers)
        self._port, unit = split_address(binding.address)
        self.unit = unit if unit is not None else profile.modbus.unit
        self._client: AsyncModbusSerialClient | None = None
        self._state = DriverState.CLOSED
        self._port_lost = False
        self._received = b""  # what came back since the last request, to say why it was unusable
        self.readings_total = 0
        self.rejected_total = 0
        self.timeouts_total = 0
        self._reject_run = 0
        self._answering: bool | None = None
        self._last_error: str | None = None
        self._last_reading_at: datetime | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("the driver is already open")
        self._state = DriverState.OPENING
        self._port_lost = False
        link = self.profile.serial
        client = AsyncModbusSerialClient(
            self._port,
            framer=FramerType.RTU,
            baudrate=link.baudrate,
            bytesize=link.bytesize,
            parity=link.parity,
            stopbits=int(link.stopbits),
            timeout=self.profile.modbus.timeout_s,
            retries=0,  # one request per poll: a lost response is a counted timeout, the next poll retries
            reconnect_delay=0,  # reopening is the supervisor's job, never the library's
            name=self.binding.device_id,
            trace_packet=self._trace_packet,
            trace_connect=self._trace_connect,
        )
        if not await client.connect():  # pymodbus reports a failed open as False (its OSError is logged by it)
            client.close()
            self._state = DriverState.DOWN
            self._last_error = f"cannot open {self._port}"
            raise DeviceUnavailableError(f"cannot open {self._port} for {self.binding.device_id}")
        self._client = client
        self._state = DriverState.UP
        _log.info("modbus sensor opened", device_id=self.binding.device_id, port=self._port, unit=self.unit)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        self._state = DriverState.CLOSED
        if client is not None:
            client.close()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus hands received bytes here before framing; a frame it then throws away
        # (bad CRC, garbage) leaves no other trace, so keep it for the reject's reason.
        self._received = b"" if sending else bytes(data)
        return data

    def _trace_connect(self, connected: bool) -> None:
        if not connected and self._client is not None:
            self._port_lost = True  # EIO on the port: the adapter was unplugged

    # ------------------------------------------------------------------ polling

    async def readings(self) -> AsyncIterator[Reading]:
        """One reading per mapped quantity every ``poll_interval_s``; raises DeviceUnavailableError on unplug."""
        if self._state is not DriverState.UP:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while self._client is not None:
                for block in self._blocks:
                    result = await self._poll(block)
                    for measurement in result.measurements if result else ():
                        yield self._reading(measurement)
                due += self.settings.poll_interval_s
                # A consumer that fell behind gets the next poll at once, not a burst of missed ones.
                due = max(due, loop.time())
                await asyncio.sleep(due - loop.time())
        except DeviceUnavailableError as err:
            self._state = DriverState.DOWN
            self._last_error = str(err)
            _log.warning("modbus sensor port went away", device_id=self.binding.device_id, port=self._port)
            raise

    def _request(self, block: ReadBlock) -> Awaitable[ModbusPDU]:
        assert self._client is not None
        reads: dict[str, Callable[..., Awaitable[ModbusPDU]]] = {
            "input": self._client.read_input_registers,
            "holding": self._client.read_holding_registers,
        }
        return reads[block.function](block.address, count=block.count, device_id=self.unit)

    async def _poll(self, block: ReadBlock) -> BlockResult | None:
        """One read of ``block``: its decoded values, or None after counting why there are none."""
        if self._client is None or self._port_lost:
            raise DeviceUnavailableError(f"{self._port} went away")
        try:
            response = await self._request(block)
        except ConnectionException as err:
            raise DeviceUnavailableError(f"{self._port} went away: {err}") from err
        except ModbusIOException:
            if self._port_lost:
                raise DeviceUnavailableError(f"{self._port} went away") from None
            if self._received:
                self._reject(block, diagnose_response(self._received, unit=self.unit, block=block))
            else:
                self._timed_out(block)
            return None
        except ModbusException as err:  # a frame pymodbus could not decode
            self._reject(block, f"undecodable response: {err}")
            return None
        self._answered()
        if response.isError():
            self._reject(block, f"exception code {getattr(response, 'exception_code', '?')}")
            return None
        try:
            result = decode_block(block, response.registers)
        except RegisterDecodeError as err:
            self._reject(block, str(err))
            return None
        for reason in result.rejects:
            self._reject(block, reason)
        if not result.rejects:
            self._reject_run = 0
        return result

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

    def _reject(self, block: ReadBlock, reason: str) -> None:
        self.rejected_total += 1
        self._reject_run += 1
        self._last_error = f"rejected {self.rejected_total} responses (last: {reason})"
        if worth_logging(self._reject_run):
            _log.warning(
                "modbus sensor response rejected",
                device_id=self.binding.device_id,
                unit=self.unit,
                function=block.function,
                address=block.address,
                reason=reason,
                in_a_row=self._reject_run,
                rejected_total=self.rejected_total,
            )

    def _timed_out(self, block: ReadBlock) -> None:
        self.timeouts_total += 1
        self._last_error = f"no answer from unit {self.unit} ({self.timeouts_total} timeouts)"
        if self._answering is not False:
            _log.warning(
                "modbus sensor not answering",
                device_id=self.binding.device_id,
                port=self._port,
                unit=self.unit,
                address=block.address,
            )
        self._answering = False

    def _answered(self) -> None:
        if self._answering is False:
            _log.info(
                "modbus sensor answering again",
                device_id=self.binding.device_id,
                unit=self.unit,
                timeouts_total=self.timeouts_total,
            )
        self._answering = True

    # ------------------------------------------------------------------ commands, health

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: one read of the sensor's first registers; done when it answers usably, failed when not."""
        if command.name != "ping":
            raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")
        if self._state is not DriverState.UP:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        result = await self._poll(self._blocks[0])
        answered = result is not None and bool(result.measurements)
        detail = "pong" if answered else (self._last_error or "no usable answer")
        return answer_ping(command, device_id=self.binding.device_id, now=self._clock(), detail=detail, ok=answered)

    def health(self) -> DriverHealth:
        """State, the last trouble (with the reject and timeout counts) and the last reading, without I/O."""
        return DriverHealth(
            state=self._state,
            last_error=self._last_error,
            last_reading_at=self._last_reading_at,
            readings_total=self.readings_total,
        )


def create(
    *, profile: ModbusSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings
) -> ModbusSensorDriver:
    """The driver of one Modbus sensor; a bad ``#unit=`` in the address raises DriverError."""
    try:
        return ModbusSensorDriver(profile=profile, binding=binding, settings=settings)
    except ValueError as err:
        raise DriverError(f"{binding.device_id}: {err}") from err
