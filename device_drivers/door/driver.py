"""Door contacts: a reed contact on a GPIO pin (gpiozero) or on a Modbus RTU discrete input (pymodbus).

Addresses (``binding.address``):

- ``gpio:17``: BCM GPIO 17 of the gateway (``gpio:BOARD11`` names the header pin instead);
- a serial device node for an RS-485 I/O module, e.g. ``/dev/ttyUSB0``; the unit id and the
  discrete input come from the settings (``unit``, ``input_index``).

Readings: on open, the current state (``door.opened`` or ``door.closed``), then every debounced
change, each with a :class:`~storegate.wire.DoorChange` payload. A GPIO contact reports its edges
through gpiozero's callbacks (they run in gpiozero's thread and are handed to the event loop);
a Modbus input is polled every ``poll_interval_s``. A module that leaves ``max_missed_polls``
polls in a row unanswered, or whose port disappears, raises DeviceUnavailableError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Final, Self

import structlog
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from device_drivers.base import DeviceUnavailableError, Driver, DriverError, DriverHealth, DriverState, Reading
from device_drivers.door.profile import DoorProfile, DoorSettings
from device_drivers.door.protocol import Debouncer, door_is_open, parse_gpio_address
from device_drivers.ports import DeviceBinding
from device_drivers.profile_base import SerialLink
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.rejects import RejectCounter
from device_drivers.toolkit.schedule import PollSchedule
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult, DoorChange, EventKind

log = structlog.get_logger(__name__)

# GPIO edges waiting for the debouncer, at most; beyond, the oldest are dropped (the latest level wins).
_MAX_EDGES: Final = 1024

KIND_OF_STATE: Final[dict[bool, str]] = {True: EventKind.DOOR_OPENED, False: EventKind.DOOR_CLOSED}


class _DoorDriver:
    """What both contact kinds share: lifecycle, debouncing and the events; subclasses read the contact."""

    def __init__(
        self, *, profile: DoorProfile, binding: DeviceBinding, settings: DoorSettings, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self.record = HealthRecord()
        self.door_open: bool | None = None
        self.rejects = RejectCounter(logger=log, device_id=binding.device_id, health=self.record, noun="polls")

    @property
    def rejected_total(self) -> int:
        """Failed reads since the driver was made."""
        return self.rejects.total

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def _initial_level(self) -> bool:
        """Whether the contact conducts now."""
        raise NotImplementedError

    async def _next_level(self, timeout: float | None) -> tuple[bool, float] | None:
        """The next raw level and its monotonic time, or None when ``timeout`` passed without one."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.record.opening()
        try:
            await self._open()
        except BaseException:
            await self._close()
            if self.record.state is DriverState.OPENING:
                self.record.state = DriverState.DOWN
            raise
        self.record.up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.closed()
        await self._close()

    def _reading(self, door_open: bool) -> Reading:
        ts = self._clock.now()
        self.door_open = door_open
        self.record.read(ts)
        payload = DoorChange(zone=self.settings.zone, open=door_open).model_dump(mode="json", exclude_none=True)
        return Reading(device_id=self.binding.device_id, kind=KIND_OF_STATE[door_open], ts=ts, payload=payload)

    async def readings(self) -> AsyncIterator[Reading]:
        """The state on open, then each debounced change; ends or raises when the contact goes away."""
        if not self.record.is_up:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        polarity = self.settings.normally_open
        debouncer = Debouncer(debounce_s=self.settings.debounce_s, initial=await self._initial_level())
        yield self._reading(door_is_open(debouncer.state, normally_open=polarity))
        while self.record.is_up:
            deadline = debouncer.deadline
            timeout = None if deadline is None else max(0.0, deadline - self._clock.monotonic())
            sample = await self._next_level(timeout)
            changed = debouncer.poll(self._clock.monotonic()) if sample is None else debouncer.feed(*sample)
            if changed is not None:
                yield self._reading(door_is_open(changed, normally_open=polarity))

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: the driver's state and the door's last known state, without I/O."""
        door = {None: "unknown", True: "open", False: "closed"}[self.door_open]
        return answer_ping(
            command,
            device_id=self.binding.device_id,
            now=self._clock.now(),
            detail=f"{self.record.state.value}, door {door}",
            ok=self.record.is_up,
        )

    def health(self) -> DriverHealth:
        """State, last error and counts, without I/O."""
        return self.record.snapshot()


class GpioDoorDriver(_DoorDriver):
    """A contact between a GPIO pin and ground (internal pull-up), read through gpiozero."""

    def __init__(
        self,
        *,
        profile: DoorProfile,
        binding: DeviceBinding,
        settings: DoorSettings,
        clock: Clock = SYSTEM_CLOCK,
        pin_factory: Any = None,  # a gpiozero Factory; None: gpiozero's default (the tests pass MockFactory)
    ) -> None:
        super().__init__(profile=profile, binding=binding, settings=settings, clock=clock)
        self._pin_factory = pin_factory
        self._device: Any = None
        self._edges: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()

    async def _open(self) -> None:
        from gpiozero import DigitalInputDevice, GPIOZeroError  # imported on use: gateways without GPIO still run

        try:
            pin = parse_gpio_address(self.binding.address)
        except ValueError as err:
            self.record.note(str(err))
            raise DriverError(str(err)) from err
        try:
            # No gpiozero bounce_time: debouncing is ours (pure, tested), and its edge filter would hide bounces.
            device = DigitalInputDevice(
                pin, pull_up=self.profile.pull_up, bounce_time=None, pin_factory=self._pin_factory
            )
        except (GPIOZeroError, OSError, RuntimeError) as err:
            raise self.record.unavailable(f"cannot use {self.binding.address}: {err}") from err
        loop = asyncio.get_running_loop()
        self._edges = asyncio.Queue(maxsize=_MAX_EDGES)
        clock = self._clock

        def keep(item: tuple[bool, float]) -> None:
            # A chattering contact with nobody reading: the oldest edges go, the debouncer needs the latest.
            if self._edges.full():
                self._edges.get_nowait()
            self._edges.put_nowait(item)

        def edge(level: bool) -> None:
            # Called in gpiozero's thread (the loop's own thread with the mock factory): hand over, stamped now.
            loop.call_soon_threadsafe(keep, (level, clock.monotonic()))

        device.when_activated = lambda: edge(True)
        device.when_deactivated = lambda: edge(False)
        self._device = device

    async def _close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            with contextlib.suppress(Exception):  # closing a pin the factory already lost must not fail __aexit__
                device.close()

    async def _initial_level(self) -> bool:
        # is_active: the pin is pulled to the contact's side, i.e. the contact conducts (pull-up or not).
        return bool(self._device.is_active)

    async def _next_level(self, timeout: float | None) -> tuple[bool, float] | None:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see device_drivers.toolkit.serialio
                return await self._edges.get()
        except TimeoutError:
            return None


class ModbusDoorDriver(_DoorDriver):
    """A contact on a discrete input of a Modbus RTU I/O module, polled every ``poll_interval_s``."""

    def __init__(
        self, *, profile: DoorProfile, binding: DeviceBinding, settings: DoorSettings, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(profile=profile, binding=binding, settings=settings, clock=clock)
        self._client: AsyncModbusSerialClient | None = None
        self._missed = 0
        self._schedule = PollSchedule(interval_s=settings.poll_interval_s, clock=clock)

    async def _open(self) -> None:
        link = self.profile.serial or SerialLink()
        client = AsyncModbusSerialClient(
            self.binding.address,
            baudrate=link.baudrate,
            bytesize=link.bytesize,
            parity=link.parity,
            stopbits=int(link.stopbits),
            timeout=self.profile.response_timeout_s,
            retries=0,
            reconnect_delay=0,  # no reconnecting inside pymodbus: the supervisor reopens us
        )
        self._client = client
        if not await client.connect():
            raise self.record.unavailable(f"cannot open {self.binding.address}")
        self._missed = 0
        self._schedule = PollSchedule(interval_s=self.settings.poll_interval_s, clock=self._clock)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _read(self) -> bool | None:
        """The input's level, None for a failed poll (counted); raises once the module counts as gone."""
        client = self._client
        if client is None or not client.connected:
            raise self.record.unavailable(f"{self.binding.address} is closed (unplugged?)")
        try:
            response = await client.read_discrete_inputs(
                self.settings.input_index, count=1, device_id=self.settings.unit
            )
        except ModbusException as err:
            reason, detail = "no_answer", str(err)
        else:
            if not response.isError() and response.bits:
                self._missed = 0
                self.rejects.accepted()
                return bool(response.bits[0])
            reason, detail = "exception_response", str(response)
        self._missed += 1
        self.rejects.reject(reason, detail, address=self.binding.address, unit=self.settings.unit)
        if self._missed >= self.profile.max_missed_polls or client is not self._client or not client.connected:
            raise self.record.unavailable(
                f"{self.binding.address} unit {self.settings.unit}: {self._missed} polls failed, last: {detail}"
            )
        return None

    async def _initial_level(self) -> bool:
        while (level := await self._read()) is None:
            await self._clock.sleep(self.settings.poll_interval_s)
        return level

    async def _next_level(self, timeout: float | None) -> tuple[bool, float] | None:
        # Each poll is a sample; the debounce deadline needs no timer of its own (it is checked at each poll).
        await self._schedule.wait()
        level = await self._read()
        return None if level is None else (level, self._clock.monotonic())


FACTORIES: Final = {"gpio": GpioDoorDriver, "modbus": ModbusDoorDriver}


def create(*, profile: DoorProfile, binding: DeviceBinding, settings: DoorSettings) -> Driver:
    """The driver of one door contact, by the profile's ``input`` (gpio or modbus)."""
    driver: Driver = FACTORIES[profile.input](profile=profile, binding=binding, settings=settings)
    return driver
