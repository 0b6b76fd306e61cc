"""One rig per driver family: its driver against its simulator, behind the few moves the contract makes.

A rig owns the simulated world of one device (a simulator on a real pty, a null modem, a
w1 sysfs tree in a temporary directory, a simulated I2C bus, gpiozero's mock pins or a fake
evdev node: fakes only where the hardware itself is absent) and builds the family's driver
for it the way the agent does, through ``create_driver`` with a shipped profile, sped up.
Where the factory cannot reach a fake at the lowest layer (I2C bus, GPIO pins, evdev), the
rig builds the family's driver class with that seam and wraps it as the factory would.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

from gpiozero.pins.mock import MockFactory

from device_drivers.barcode.driver import HidBarcodeDriver
from device_drivers.barcode.profile import BarcodeProfile, BarcodeSettings
from device_drivers.barcode.simulator import SimulatedSerialScanner
from device_drivers.base import Driver
from device_drivers.door.driver import GpioDoorDriver
from device_drivers.door.profile import DoorProfile, DoorSettings
from device_drivers.door.simulator import SimulatedDoorModule, SimulatedGpioContact
from device_drivers.environment.monitor import monitored
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.modbus_sensor.simulator import Fault as ModbusFault
from device_drivers.modbus_sensor.simulator import ModbusSensorSimulator
from device_drivers.onewire.simulator import OneWireSimulator
from device_drivers.ports import DeviceBinding
from device_drivers.printer.profile import PrinterSettings
from device_drivers.printer.simulator import PtyPrinter, TcpPrinter
from device_drivers.profile_base import ProfileBase
from device_drivers.profiles import create_driver, load_catalog, parse_settings
from device_drivers.serial_sensor.simulator import Fault as LineFault
from device_drivers.serial_sensor.simulator import SerialSensorSimulator
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.sht3x.driver import Sht3xDriver
from device_drivers.sht3x.profile import I2cSensorProfile
from device_drivers.sht3x.simulator import SimulatedSht3x
from device_drivers.simulated.pty import NullModem, PtyPort
from storegate.wire import EventKind
from tests.device_drivers.test_barcode_hid import FakeInputDevice, K, press, typed

DEVICE_ID = "contract-1"
ENVIRONMENT = frozenset({EventKind.ENVIRONMENT_READING.value})
FAST_SENSOR = EnvironmentSettings(zone="contract", poll_interval_s=0.01)


def shipped(profile_id: str, **changes: Any) -> ProfileBase:
    """A shipped profile with ``changes`` merged into its sections (validated again)."""
    profile = load_catalog().get(profile_id)
    data = profile.model_dump()
    for key, value in changes.items():
        data[key] = data[key] | value if isinstance(value, dict) else value
    return type(profile).model_validate(data)


class Rig:
    """The simulated world of one device of a family, and its driver; ``async with`` it."""

    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]  # the kinds of reading the family's driver reports
    has_bad_input: ClassVar[bool] = True  # whether the device can send something to reject
    can_unplug: ClassVar[bool] = True  # whether the device can go away (a GPIO pin cannot)

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> Self:
        await self.plug()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.unplug()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for cleanup in reversed(self._cleanups):
            await cleanup()

    def binding(self, address: str) -> DeviceBinding:
        """The device's binding at ``address``."""
        return DeviceBinding(device_id=DEVICE_ID, address=address)

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a simulator's loop until the rig closes."""
        self._tasks.append(asyncio.create_task(coroutine, name=f"{self.name} simulator"))

    def _on_close(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Await ``cleanup`` when the rig closes."""
        self._cleanups.append(cleanup)

    async def plug(self) -> None:
        """Plug the device in (again): start its simulator."""
        raise NotImplementedError

    def driver(self) -> Driver:
        """A new driver for the device as it is plugged in now."""
        raise NotImplementedError

    async def prompt(self) -> None:
        """Make the device report something new (a polled sensor needs nothing)."""

    async def garble(self) -> None:
        """Send the driver something to reject: a garbled frame or line, a bus error."""
        raise NotImplementedError

    async def unplug(self) -> None:
        """The device goes away (idempotent)."""


class ShelfRig(Rig):
    """The shelf controller firmware on a pty; stock reports come on their own."""

    name = "shelf"
    kinds = frozenset({EventKind.SHELF_STOCK, EventKind.SHELF_PICK, EventKind.SHELF_PUT, EventKind.SHELF_FAULT})
    slots = (SlotSpec(250.0, 4), SlotSpec(100.0, 2))
    profile = shipped(
        "storegate-shelf-v1",
        shelf={"slots": 2},
        push={"sample_rate_hz": 40, "filter_window": 2},
        calibration={"settle_window_s": 0.15},
        timing={"info_timeout_s": 1.0, "ack_timeout_s": 1.0, "silence_timeout_s": 1.0},
    )

    async def plug(self) -> None:
        self.port = PtyPort().open()
        self.sim = ShelfSimulator(port=self.port, slots=self.slots, rng=random.Random(3))
        self._run(self.sim.run())

    def driver(self) -> Driver:
        settings = {"slots": {"1": {"unit_weight_g": 250}, "2": {"unit_weight_g": 100}}, "stock_interval_s": 0.1}
        return create_driver(self.profile, self.binding(self.port.port), parse_settings(self.profile, settings))

    async def prompt(self) -> None:
        self.sim.put(1, touch_s=0.0)

    async def garble(self) -> None:
        self.sim.inject_garbage(b"line noise")

    async def unplug(self) -> None:
        self.sim.unplug()


class SerialScannerRig(Rig):
    """A CDC-ACM scanner's firmware on a pty."""

    name = "barcode-serial"
    kinds = frozenset({EventKind.SCAN_SALE})
    codes = ("5901234123457", "4006381333931", "9780201379624", "0036000291452")

    async def plug(self) -> None:
        self.port = PtyPort().open()
        self.scanner = SimulatedSerialScanner(port=self.port, terminator="crlf")
        self._scans = 0
        self._run(self.scanner.run())

    def driver(self) -> Driver:
        profile = load_catalog().get("zebra-ds-cdc")
        return create_driver(profile, self.binding(self.port.port), BarcodeSettings(double_read_window_s=0))

    async def prompt(self) -> None:
        self._scans += 1
        self.scanner.queue_scan(self.codes[self._scans % len(self.codes)], aim="]E0")

    async def garble(self) -> None:
        self.scanner.queue_garbage()

    async def unplug(self) -> None:
        self.scanner.unplug()


class HidScannerRig(Rig):
    """A keyboard-wedge scanner: its key events on a fake evdev node (the lowest layer)."""

    name = "barcode-hid"
    kinds = frozenset({EventKind.SCAN_SALE})
    profile = load_catalog().get("zebra-ds-hid-kbd")

    async def plug(self) -> None:
        self.device = FakeInputDevice()

    def driver(self) -> Driver:
        assert isinstance(self.profile, BarcodeProfile)
        device = self.device
        return HidBarcodeDriver(
            profile=self.profile,
            binding=self.binding("/dev/input/event7"),
            settings=BarcodeSettings(double_read_window_s=0),
            open_device=lambda address: device,
        )

    async def prompt(self) -> None:
        self.device.push(typed("]E05901234123457"))

    async def garble(self) -> None:
        self.device.push(press(K["KEY_1"]) + press(K["KEY_F1"]) + press(K["KEY_ENTER"]))  # a key with no character

    async def unplug(self) -> None:
        self.device.unplug()


class ModbusSensorRig(Rig):
    """An XY-MD02 as a pymodbus server on a null modem; polled."""

    name = "modbus-sensor"
    kinds = ENVIRONMENT
    profile = shipped("xy-md02", modbus={"unit": 1, "timeout_s": 0.4})

    async def plug(self) -> None:
        self.sim = ModbusSensorSimulator(profile=self.profile)  # type: ignore[arg-type]
        await self.sim.__aenter__()
        self._on_close(self.sim.__aexit__)

    def driver(self) -> Driver:
        return create_driver(self.profile, self.binding(self.sim.port), FAST_SENSOR)

    async def garble(self) -> None:
        self.sim.inject(ModbusFault.CRC)

    async def unplug(self) -> None:
        self.sim.unplug()


class SerialSensorRig(Rig):
    """A line sensor printing on a pty every 20 ms."""

    name = "serial-sensor"
    kinds = ENVIRONMENT

    async def plug(self) -> None:
        self.sim = SerialSensorSimulator(interval_s=0.02)
        await self.sim.__aenter__()
        self._run(self.sim.run())

    def driver(self) -> Driver:
        profile = load_catalog().get("diy-th-serial")
        return create_driver(profile, self.binding(self.sim.port), FAST_SENSOR)

    async def garble(self) -> None:
        self.sim.inject(LineFault.GARBAGE)

    async def unplug(self) -> None:
        self.sim.unplug()


class OneWireRig(Rig):
    """A DS18B20 in a w1 sysfs tree in a temporary directory; a prompt writes its next sample."""

    name = "onewire"
    kinds = ENVIRONMENT

    async def plug(self) -> None:
        if not hasattr(self, "sim"):
            self.sim = OneWireSimulator(root=self.tmp_path / "w1")
            self.probe = self.sim.add_probe()
        else:
            self.sim.replug(self.probe.name)

    def driver(self) -> Driver:
        profile = load_catalog().get("ds18b20")
        return create_driver(profile, self.binding(str(self.probe)), FAST_SENSOR)

    async def prompt(self) -> None:
        self.sim.step()

    async def garble(self) -> None:
        self.sim.inject(self.probe.name, "crc")
        self.sim.step()  # every read fails its CRC until the next prompt writes a good sample

    async def unplug(self) -> None:
        self.sim.unplug(self.probe.name)


class Sht3xRig(Rig):
    """An SHT3x behind a simulated smbus2 bus (the lowest layer); polled."""

    name = "sht3x"
    kinds = ENVIRONMENT
    profile = load_catalog().get("sht3x")

    async def plug(self) -> None:
        if not hasattr(self, "sensor"):
            self.sensor = SimulatedSht3x()
        self.sensor.adapter_present = True

    def driver(self) -> Driver:
        assert isinstance(self.profile, I2cSensorProfile)
        binding = self.binding("i2c-1:0x44")
        inner = Sht3xDriver(
            profile=self.profile, binding=binding, settings=FAST_SENSOR, bus_factory=self.sensor.bus_factory
        )
        return monitored(inner, binding=binding, settings=FAST_SENSOR)

    async def garble(self) -> None:
        self.sensor.corrupt()

    async def unplug(self) -> None:
        self.sensor.remove_adapter()


class GpioDoorRig(Rig):
    """A reed contact on a gpiozero mock pin (the lowest layer); a prompt opens or closes the door."""

    name = "door-gpio"
    kinds = frozenset({EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED})
    has_bad_input = False  # a level on a pin has no frame to garble; contact bounce is debounced (test_door)
    can_unplug = False  # the pin is part of the gateway
    profile = load_catalog().get("door-gpio-reed")

    async def plug(self) -> None:
        self.factory = MockFactory()
        self.contact = SimulatedGpioContact(pin=self.factory.pin(17))
        self.door_open = False

    def driver(self) -> Driver:
        assert isinstance(self.profile, DoorProfile)
        return GpioDoorDriver(
            profile=self.profile,
            binding=self.binding("gpio:17"),
            settings=DoorSettings(zone="contract", debounce_s=0.0),
            pin_factory=self.factory,
        )

    async def prompt(self) -> None:
        self.door_open = not self.door_open
        self.contact.set_door(self.door_open)


class ModbusDoorRig(Rig):
    """A discrete-input module as a pymodbus server on a null modem; a prompt flips the contact's input."""

    name = "door-modbus"
    kinds = frozenset({EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED})
    profile = shipped("door-modbus-di", response_timeout_s=0.2)

    async def plug(self) -> None:
        self.modem = NullModem().open()
        self.module = SimulatedDoorModule(port=self.modem.device_port)
        await self.module.start()
        self._on_close(self.module.stop)
        self._on_close(self.modem.close)

    def driver(self) -> Driver:
        settings = DoorSettings(zone="contract", poll_interval_s=0.02, debounce_s=0.0, unit=1, input_index=0)
        return create_driver(self.profile, self.binding(self.modem.port), settings)

    async def prompt(self) -> None:
        self.module.set_input(0, not self.module.inputs[0])

    async def garble(self) -> None:
        self.module.refuse()

    async def unplug(self) -> None:
        self.modem.unplug()


class _PrinterRig(Rig):
    """A receipt printer emulator; a prompt changes its paper or cover, a garble is line noise for a status query."""

    kinds = frozenset({EventKind.PRINTER_STATUS})
    settings = PrinterSettings(status_interval_s=0.02)

    def _emulator(self) -> PtyPrinter | TcpPrinter:
        raise NotImplementedError

    # Three states in turn: a prompt's state differs from the one two prompts back, which the driver may still
    # have reported last when it did not poll between two prompts.
    states: ClassVar[tuple[tuple[Literal["ok", "low"], bool], ...]] = (("low", False), ("low", True), ("ok", False))
    prompts = -1

    async def prompt(self) -> None:
        printer = self._emulator().printer
        self.prompts += 1
        printer.paper, printer.cover_open = self.states[self.prompts % len(self.states)]

    async def garble(self) -> None:
        self._emulator().printer.garble_answers = 1  # asked again at once: rejected, counted, and reading goes on


class SerialPrinterRig(_PrinterRig):
    """A serial receipt printer: the emulator on a pty."""

    name = "printer-serial"
    profile = shipped("epson-tm-t20", transport="serial", status_timeout_s=0.3)

    async def plug(self) -> None:
        self.pty = PtyPrinter()
        await self.pty.__aenter__()
        self._on_close(self.pty.close)

    def _emulator(self) -> PtyPrinter:
        return self.pty

    def driver(self) -> Driver:
        return create_driver(self.profile, self.binding(self.pty.port), self.settings)

    async def unplug(self) -> None:
        self.pty.unplug()


class NetworkPrinterRig(_PrinterRig):
    """A network receipt printer: the emulator on a loopback TCP port; unplugging is switching it off."""

    name = "printer-network"
    profile = shipped("network-printer-9100", status_timeout_s=0.3)

    async def plug(self) -> None:
        if getattr(self, "tcp", None) is None:
            self.tcp = TcpPrinter()
            await self.tcp.__aenter__()
            self._on_close(self.tcp.close)
        else:
            await self.tcp.power_on()

    def _emulator(self) -> TcpPrinter:
        return self.tcp

    def driver(self) -> Driver:
        return create_driver(self.profile, self.binding(self.tcp.address), self.settings)

    async def unplug(self) -> None:
        await self.tcp.power_off()


RIGS: tuple[type[Rig], ...] = (
    ShelfRig,
    SerialScannerRig,
    HidScannerRig,
    ModbusSensorRig,
    SerialSensorRig,
    OneWireRig,
    Sht3xRig,
    GpioDoorRig,
    ModbusDoorRig,
    SerialPrinterRig,
    NetworkPrinterRig,
)
