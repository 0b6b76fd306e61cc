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

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Self

import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from device_drivers.base import CommandNotSupportedError, DeviceUnavailableError, DriverError, Reading
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.modbus_sensor.profile import ModbusSensorProfile, split_address
from device_drivers.modbus_sensor.protocol import (
    BlockResult,
    ReadBlock,
    RegisterDecodeError,
    decode_block,
    diagnose_response,
    plan_reads,
)
from device_drivers.ports import DeviceBinding
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.sensor import SensorDriver
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult

_log = structlog.get_logger(__name__)


class ModbusSensorDriver(SensorDriver):
    """Driver of one Modbus RTU sensor; create it with :func:`create`."""

    def __init__(
        self,
        *,
        profile: ModbusSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            binding=binding,
            settings=settings,
            clock=clock,
            logger=_log,
            reject_event="modbus sensor response rejected",
            reject_noun="responses",
            silence_events=("modbus sensor not answering", "modbus sensor answering again"),
        )
        self.profile = profile
        self._blocks = plan_reads(profile.registers)
        self._port, unit = split_address(binding.address)
        self.unit = unit if unit is not None else profile.modbus.unit
        self._client: AsyncModbusSerialClient | None = None
        self._port_lost = False
        self._received = b""  # what came back since the last request, to say why it was unusable

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("the driver is already open")
        self.record.opening()
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
            self.record.down(f"cannot open {self._port}")
            raise DeviceUnavailableError(f"cannot open {self._port} for {self.binding.device_id}")
        self._client = client
        self.record.up()
        _log.info("modbus sensor opened", device_id=self.binding.device_id, port=self._port, unit=self.unit)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        self.record.closed()
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

    def readings(self) -> AsyncIterator[Reading]:
        """One reading per mapped quantity every ``poll_interval_s``; raises DeviceUnavailableError on unplug."""
        return self.polled(self._poll_all)

    async def _poll_all(self) -> AsyncIterator[Reading]:
        for block in self._blocks:
            result = await self._poll(block)
            for measurement in result.measurements if result else ():
                yield self.reading(measurement.quantity, measurement.value, self._clock.now())

    def went_away(self, error: DeviceUnavailableError) -> None:
        """The adapter went away: DOWN, and logged."""
        super().went_away(error)
        _log.warning("modbus sensor port went away", device_id=self.binding.device_id, port=self._port)

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
                self._reject(block, "unusable_response", diagnose_response(self._received, unit=self.unit, block=block))
            else:
                self.silences.silent(
                    f"no answer from unit {self.unit}", port=self._port, unit=self.unit, address=block.address
                )
            return None
        except ModbusException as err:  # a frame pymodbus could not decode
            self._reject(block, "undecodable_response", str(err))
            return None
        self.silences.heard(unit=self.unit)
        if response.isError():
            self._reject(block, "exception_response", f"exception code {getattr(response, 'exception_code', '?')}")
            return None
        try:
            result = decode_block(block, response.registers)
        except RegisterDecodeError as err:
            self._reject(block, "wrong_length", str(err))
            return None
        for reason in result.rejects:
            self._reject(block, "out_of_range", reason)
        if not result.rejects:
            self.rejects.accepted()
        return result

    def _reject(self, block: ReadBlock, reason: str, detail: str) -> None:
        self.rejects.reject(reason, detail, unit=self.unit, function=block.function, address=block.address)

    # ------------------------------------------------------------------ commands

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: one read of the sensor's first registers; done when it answers usably, failed when not."""
        if command.name != "ping":
            raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")
        self.check_open()
        result = await self._poll(self._blocks[0])
        answered = result is not None and bool(result.measurements)
        detail = "pong" if answered else (self.record.last_error or "no usable answer")
        return answer_ping(command, device_id=self.binding.device_id, now=self._clock.now(), detail=detail, ok=answered)


def create(
    *, profile: ModbusSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings
) -> ModbusSensorDriver:
    """The driver of one Modbus sensor; a bad ``#unit=`` in the address raises DriverError."""
    try:
        return ModbusSensorDriver(profile=profile, binding=binding, settings=settings)
    except ValueError as err:
        raise DriverError(f"{binding.device_id}: {err}") from err
